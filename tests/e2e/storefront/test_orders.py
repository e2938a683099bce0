"""Placing, following and cancelling orders in the storefront, as a browser without
JavaScript (and as the one orders.js is: the JSON status endpoint it polls)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from support.processes import RunningMercato
from support.storefront import Browser, Stockroom, csrf_token, hidden_field
from support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

_ORDER_ID = re.compile(r'data-order-id="([^"]+)" data-status="([a-z]+)"')


def statuses(html: str) -> dict[str, str]:
    """The status badges of an orders page, by order id."""
    return dict(_ORDER_ID.findall(html))


def order_form(page: str, **fields: str) -> dict[str, str]:
    """What the product page's order form posts: its hidden fields, quantity 1, ``fields``."""
    hidden = ("csrf_token", "product_id", "idempotency_key")
    return {**{name: hidden_field(page, name) for name in hidden}, "quantity": "1", **fields}


async def order(browser: Browser, product: dict[str, Any], **fields: str) -> str:
    """Place an order from ``product``'s page; its order id."""
    before = set(statuses((await browser.get("/orders")).text))
    shown = await browser.get(f"/products/{product['id']}")
    answer = await browser.http.post("/orders", data=order_form(shown.text, **fields))
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/orders"
    placed = set(statuses((await browser.get("/orders")).text)) - before
    assert len(placed) == 1
    return placed.pop()


async def settled(browser: Browser, order_id: str) -> str:
    async def status() -> str | None:
        found = statuses((await browser.get("/orders")).text)[order_id]
        return found if found != "pending" else None

    return await eventually(status)


@pytest.fixture
async def shopper(shop: RunningMercato) -> AsyncIterator[Browser]:
    """A browser signed in as a new customer."""
    async with Browser(shop.base_url) as browser:
        await browser.sign_up()
        yield browser


async def test_an_order_placed_is_listed_and_becomes_confirmed(
    shopper: Browser, stockroom: Stockroom
) -> None:
    product = await stockroom.add(name="<b>Lamp</b>", price="12.50", stock=5)
    shown = await shopper.get(f"/products/{product['id']}")

    answer = await shopper.http.post(
        "/orders",
        data=order_form(shown.text, quantity="2", shipping_address="1 <i>Main</i> Street"),
    )

    assert answer.status_code == 303
    assert answer.headers["location"] == "/orders"
    page = await shopper.get("/orders")
    assert "Your order was placed;" in page.text
    [(order_id, status)] = statuses(page.text).items()
    assert status in {"pending", "confirmed"}
    assert "&lt;b&gt;Lamp&lt;/b&gt;" in page.text
    assert "25.00 USD" in page.text
    assert "1 &lt;i&gt;Main&lt;/i&gt; Street" in page.text
    assert f'action="/orders/{order_id}/cancel"' in page.text
    assert await settled(shopper, order_id) == "confirmed"
    assert "Your order was placed;" not in (await shopper.get("/orders")).text  # shown once


async def test_the_status_script_is_loaded_while_an_order_is_pending(
    shopper: Browser, stockroom: Stockroom
) -> None:
    order_id = await order(shopper, await stockroom.add())
    page = await shopper.get("/orders")
    pending = statuses(page.text)[order_id] == "pending"  # or already confirmed
    assert ('<script src="/static/orders.js" defer></script>' in page.text) is pending
    assert ("Reload to see the latest status." in page.text) is pending
    await settled(shopper, order_id)

    page = await shopper.get("/orders")

    assert "orders.js" not in page.text  # nothing pending: nothing to poll
    assert "Reload to see" not in page.text
    assert '<p id="order-status-live" class="visually-hidden" aria-live="polite">' in page.text
    script = await shopper.get("/static/orders.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]


@pytest.mark.parametrize("at_once", [False, True], ids=["one-after-the-other", "at-once"])
async def test_a_form_submitted_twice_places_one_order(
    shopper: Browser, stockroom: Stockroom, at_once: bool
) -> None:
    product = await stockroom.add()
    form = order_form((await shopper.get(f"/products/{product['id']}")).text)

    if at_once:  # the second may find the first still being placed
        answers = await asyncio.gather(*(shopper.http.post("/orders", data=form) for _ in "12"))
    else:
        answers = [await shopper.http.post("/orders", data=form) for _ in "12"]

    assert [answer.status_code for answer in answers] == [303, 303]
    assert {answer.headers["location"] for answer in answers} == {"/orders"}
    assert len(statuses((await shopper.get("/orders")).text)) == 1


async def test_the_orders_are_paged(shopper: Browser, stockroom: Stockroom) -> None:
    product = await stockroom.add(stock=100)
    placed = [await order(shopper, product) for _ in range(11)]  # one more than a page

    first = await shopper.get("/orders")
    second = await shopper.get("/orders", params={"page": "2"})

    assert list(statuses(first.text)) == placed[:0:-1]  # newest first
    assert list(statuses(second.text)) == placed[:1]
    assert '<a rel="next" href="/orders?page=2">Next</a>' in first.text
    assert '<a rel="prev" href="/orders?page=1">Previous</a>' in second.text


@pytest.mark.parametrize(
    ("quantity", "message"),
    [("0", "greater than or equal to 1"), ("101", "less than or equal to 100"), ("two", "integer")],
)
async def test_a_bad_quantity_shows_the_product_page_again(
    shopper: Browser, stockroom: Stockroom, quantity: str, message: str
) -> None:
    product = await stockroom.add(name="<script>x</script>")

    answer = await shopper.submit(
        f"/products/{product['id']}",
        {"product_id": product["id"], "quantity": quantity, "shipping_address": "Here"},
        action="/orders",
    )

    assert answer.status_code == 422
    assert "<h1>&lt;script&gt;x&lt;/script&gt;</h1>" in answer.text
    assert 'role="alert">The order was not placed. Check the fields below.' in answer.text
    error = re.search(r'<p class="error" id="f-quantity-error">([^<]+)</p>', answer.text)
    assert error
    assert message in error[1]
    assert f'value="{quantity}"' in answer.text
    assert ">Here</textarea>" in answer.text
    assert statuses((await shopper.get("/orders")).text) == {}


async def test_an_order_for_an_unknown_product_is_refused(shopper: Browser) -> None:
    answer = await shopper.submit(
        "/orders", {"product_id": "no-such-product", "quantity": "1"}, action="/orders"
    )

    assert answer.status_code == 422
    assert "<h1>Product not found</h1>" in answer.text
    assert statuses((await shopper.get("/orders")).text) == {}


async def test_an_order_without_the_csrf_token_is_refused(
    shopper: Browser, stockroom: Stockroom
) -> None:
    product = await stockroom.add()

    answer = await shopper.http.post("/orders", data={"product_id": product["id"], "quantity": "1"})

    assert answer.status_code == 403
    assert statuses((await shopper.get("/orders")).text) == {}


async def test_a_visitor_is_sent_to_sign_in(browser: Browser, stockroom: Stockroom) -> None:
    product = await stockroom.add()
    token = csrf_token((await browser.get("/login")).text)  # a session, and its CSRF token

    posted = await browser.http.post(
        "/orders", data={"csrf_token": token, "product_id": product["id"], "quantity": "1"}
    )
    listed = await browser.get("/orders")
    asked = await browser.get("/orders/status", params={"ids": "x"})

    assert (posted.status_code, posted.headers["location"]) == (303, "/login")
    assert (listed.status_code, listed.headers["location"]) == (303, "/login?next=/orders")
    assert asked.status_code == 401
    assert asked.json()["detail"] == "Sign in to see your orders."


async def test_an_order_is_cancelled_once(shopper: Browser, stockroom: Stockroom) -> None:
    product = await stockroom.add()
    order_id = await order(shopper, product)
    await settled(shopper, order_id)

    cancelled = await shopper.submit("/orders", {}, action=f"/orders/{order_id}/cancel")
    page = await shopper.get("/orders")

    assert (cancelled.status_code, cancelled.headers["location"]) == (303, "/orders")
    assert "Your order was cancelled." in page.text
    assert statuses(page.text)[order_id] == "cancelled"
    assert f'action="/orders/{order_id}/cancel"' not in page.text  # no button any more

    again = await shopper.http.post(
        f"/orders/{order_id}/cancel", data={"csrf_token": csrf_token(page.text)}
    )

    assert again.status_code == 303
    assert "can no longer be cancelled" in (await shopper.get("/orders")).text


async def test_a_cancel_without_the_csrf_token_changes_nothing(
    shopper: Browser, stockroom: Stockroom
) -> None:
    order_id = await order(shopper, await stockroom.add())
    await settled(shopper, order_id)

    answer = await shopper.http.post(  # the cancel form, without its one field
        f"/orders/{order_id}/cancel",
        content=b"",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert answer.status_code == 403
    assert statuses((await shopper.get("/orders")).text)[order_id] == "confirmed"


async def test_a_rejected_order_shows_why_and_cannot_be_cancelled(
    shopper: Browser, stockroom: Stockroom
) -> None:
    product = await stockroom.add(stock=1)
    order_id = await order(shopper, product, quantity="2")  # more than the form allows

    assert await settled(shopper, order_id) == "rejected"
    page = await shopper.get("/orders")
    assert "Not placed:" in page.text
    assert f'action="/orders/{order_id}/cancel"' not in page.text


async def test_someone_elses_order_is_not_found(
    shop: RunningMercato, shopper: Browser, stockroom: Stockroom
) -> None:
    order_id = await order(shopper, await stockroom.add())
    async with Browser(shop.base_url) as other:
        await other.sign_up()

        cancel = await other.submit("/", {}, action=f"/orders/{order_id}/cancel")
        asked = await other.get("/orders/status", params={"ids": order_id})

        assert cancel.status_code == 404
        assert "<h1>Order not found</h1>" in cancel.text
        assert asked.status_code == 200
        assert asked.json() == {}  # the same answer as for an id that names nothing
        assert statuses((await other.get("/orders")).text) == {}
    assert (await settled(shopper, order_id)) == "confirmed"


async def test_the_status_endpoint_answers_for_ones_own_orders(
    shopper: Browser, stockroom: Stockroom
) -> None:
    first = await order(shopper, await stockroom.add())
    second = await order(shopper, await stockroom.add())

    async def both_settled() -> dict[str, str] | None:
        answer = await shopper.get("/orders/status", params={"ids": f"{first},{second},unknown,.."})
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["cache-control"] == "no-store"
        found: dict[str, str] = answer.json()
        return found if "pending" not in found.values() else None

    assert await eventually(both_settled) == {first: "confirmed", second: "confirmed"}
    too_many = await shopper.get("/orders/status", params={"ids": ",".join(map(str, range(11)))})
    assert too_many.status_code == 422
    assert too_many.headers["content-type"] == "application/problem+json"


async def test_the_status_endpoint_is_about_ones_own_orders_even_for_an_admin(
    shopper: Browser, admin: Browser, stockroom: Stockroom
) -> None:
    order_id = await order(shopper, await stockroom.add())

    asked = await admin.get("/orders/status", params={"ids": order_id})

    assert asked.status_code == 200
    assert asked.json() == {}  # the API would show an admin this order: the page does not
