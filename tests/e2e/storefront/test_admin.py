"""The administrators' pages (/admin/products, /admin/orders), as a browser without
JavaScript: who may see them, and the catalogue and orders they manage."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from starlette.routing import Route

from mercato.storefront import admin as admin_pages
from mercato.storefront import admin_orders
from support.orders_flow import Shopper, sign_up, wait_settled
from support.storefront import Browser, csrf_token, fill, form_fields

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

#: The password support.orders_flow.sign_up gives its shoppers.
SHOPPER_PASSWORD = "Shopper-pass-1"


def admin_routes() -> list[tuple[str, str]]:
    """Every (method, path) of the admin pages, as their routers declare them."""
    return sorted(
        (method, route.path)
        for module in (admin_pages, admin_orders)
        for route in module.router.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    )


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


async def add_product(admin: Browser, **fields: str) -> dict[str, Any]:
    """Add a product through the new-product form (in a category of its own); the API's view."""
    category = unique("t")
    data = {"sku": unique("SKU-"), "name": unique("Lamp "), "price": "19.99", "stock": "3"}
    answer = await fill(
        admin,
        "/admin/products/new",
        {**data, "category": category, **fields},
        action="/admin/products",
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/admin/products"
    [product] = await in_category(admin.http, category)
    return product


async def in_category(http: httpx.AsyncClient, category: str) -> list[dict[str, Any]]:
    answer = await http.get("/api/v1/products", params={"category": category})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


async def product_of(http: httpx.AsyncClient, product_id: str) -> httpx.Response:
    return await http.get(f"/api/v1/products/{product_id}")


async def customer(browser: Browser) -> Shopper:
    """A new customer, signed in to ``browser`` (and holding an API token)."""
    [shopper] = await sign_up(browser.http, 1)
    await browser.sign_in(shopper.username, SHOPPER_PASSWORD)
    return shopper


def filled(path: str, product_id: str) -> str:
    return path.replace("{product_id}", product_id)


async def test_the_admin_routes_are_the_pages_of_api_md() -> None:
    assert admin_routes() == [
        ("GET", "/admin/orders"),
        ("GET", "/admin/products"),
        ("GET", "/admin/products/new"),
        ("GET", "/admin/products/{product_id}/edit"),
        ("POST", "/admin/products"),
        ("POST", "/admin/products/{product_id}"),
        ("POST", "/admin/products/{product_id}/delete"),
    ]


async def test_a_visitor_is_sent_to_sign_in_from_every_admin_page(
    admin: Browser, browser: Browser
) -> None:
    product = await add_product(admin)
    category = unique("t")
    posted = {"sku": unique("SKU-"), "name": "Visitor's", "price": "1.00", "category": category}

    token = csrf_token((await browser.get("/login")).text)  # a visitor's own session
    for method, path in admin_routes():
        url = filled(path, product["id"])
        if method == "GET":
            answer = await browser.http.get(url)
            assert answer.status_code == 303, url
            assert answer.headers["location"] == f"/login?next={quote(url)}", url
            continue
        # Without this session's token a POST is refused before anything else is decided.
        forged = await browser.http.post(url, data=posted)
        assert (forged.status_code, forged.headers.get("location")) == (403, None), url
        answer = await browser.http.post(url, data={**posted, "csrf_token": token})
        assert (answer.status_code, answer.headers.get("location")) == (303, "/login"), url

    assert (await product_of(browser.http, product["id"])).json() == product
    assert await in_category(browser.http, category) == []


async def test_a_customer_is_refused_every_admin_page_and_changes_nothing(
    admin: Browser, browser: Browser
) -> None:
    product = await add_product(admin)
    await customer(browser)
    token = csrf_token((await browser.get("/")).text)  # a valid token of the customer's session
    category = unique("t")
    posted = {
        "sku": unique("SKU-"),
        "name": "Customer's",
        "price": "1.00",
        "stock": "0",
        "category": category,
        "csrf_token": token,
    }

    for method, path in admin_routes():
        url = filled(path, product["id"])
        answer = await browser.http.request(method, url, data=posted if method == "POST" else None)

        assert answer.status_code == 403, (method, url)
        assert "This page is for administrators." in answer.text

    assert (await product_of(browser.http, product["id"])).json() == product
    assert await in_category(browser.http, category) == []


async def test_the_admin_adds_edits_and_deletes_a_product(admin: Browser, browser: Browser) -> None:
    product = await add_product(admin, name="Brass Desk Lamp", price="19.99", stock="3")
    assert (product["name"], product["price"], product["stock"]) == ("Brass Desk Lamp", "19.99", 3)
    listed = await admin.get("/admin/products")
    assert f"Added Brass Desk Lamp ({product['sku']})." in listed.text
    shelf = f"/?category={product['category']}"
    assert "19.99 USD" in (await browser.get(shelf)).text  # read once: the cache holds it now

    edit = f"/admin/products/{product['id']}/edit"
    edited = await fill(
        admin,
        edit,
        {"price": "24.50", "stock": "8"},
        action=filled("/admin/products/{product_id}", product["id"]),
    )

    assert edited.status_code == 303, edited.text
    assert edited.headers["location"] == "/admin/products"
    now = (await product_of(browser.http, product["id"])).json()
    assert (now["price"], now["stock"], now["name"]) == ("24.50", 8, "Brass Desk Lamp")
    page = (await browser.get(shelf)).text
    assert "24.50 USD" in page
    assert "8 in stock" in page

    deleted = await admin.submit(
        "/admin/products", {}, action=f"/admin/products/{product['id']}/delete"
    )

    assert deleted.status_code == 303
    assert '<script src="/static/admin.js" defer>' in listed.text  # asks first, with JavaScript
    assert "The product was deleted." in (await admin.get("/admin/products")).text
    assert (await product_of(browser.http, product["id"])).status_code == 404
    assert (await admin.get(edit)).status_code == 404
    assert "Brass Desk Lamp" not in (await browser.get(shelf)).text


async def test_the_catalogue_table_is_paged_and_searchable(admin: Browser) -> None:
    product = await add_product(admin, name=unique("Sieve "))

    first = await admin.get("/admin/products")
    second = await admin.get("/admin/products", params={"page": "2"})
    found = await admin.get("/admin/products", params={"q": product["name"]})

    assert 'rel="next" href="/admin/products?page=2"' in first.text  # the demo catalogue
    assert 'rel="prev" href="/admin/products?page=1"' in second.text
    assert product["sku"] in first.text  # newest first
    assert product["sku"] not in second.text
    assert found.text.count("<tr>") == 2  # the header row and the one product
    assert product["sku"] in found.text
    assert f'value="{product["name"]}"' in found.text  # in the table's search box
    assert 'id="site-search" name="q" type="search" value=""' in found.text  # not the shop's


async def test_an_edit_writes_only_what_the_admin_changed(admin: Browser, browser: Browser) -> None:
    product = await add_product(admin, stock="5")
    edit, action = f"/admin/products/{product['id']}/edit", f"/admin/products/{product['id']}"
    stale = form_fields((await admin.get(edit)).text, action)
    assert (await fill(admin, edit, {"stock": "2"}, action=action)).status_code == 303  # meanwhile

    answer = await admin.http.post(action, data={**stale, "description": "With a long cord."})

    assert answer.status_code == 303, answer.text
    now = (await product_of(browser.http, product["id"])).json()
    assert (now["stock"], now["description"]) == (2, "With a long cord.")


async def test_errors_are_shown_next_to_their_fields_and_the_values_kept(
    admin: Browser, browser: Browser
) -> None:
    category = unique("t")
    sku = unique("SKU-")
    data = {"sku": sku, "name": "Kettle", "price": "9.99", "stock": "two", "category": category}
    new, create = "/admin/products/new", "/admin/products"

    not_a_number = await fill(admin, new, data, action=create)

    assert not_a_number.status_code == 422
    assert 'id="f-stock-error"' in not_a_number.text
    assert 'value="two"' in not_a_number.text
    assert f'value="{sku}"' in not_a_number.text
    assert "Fix the fields marked below." in not_a_number.text

    refused = await fill(admin, new, {**data, "price": "0", "stock": "2"}, action=create)

    assert refused.status_code == 422
    assert 'id="f-price-error"' in refused.text
    assert 'id="f-stock-error"' not in refused.text
    assert 'value="Kettle"' in refused.text
    assert await in_category(browser.http, category) == []

    taken = await add_product(admin)
    duplicate = await fill(admin, new, {**data, "sku": taken["sku"], "stock": "2"}, action=create)

    assert duplicate.status_code == 409
    assert 'id="f-sku-error"' in duplicate.text
    assert "exists already" in duplicate.text
    assert await in_category(browser.http, category) == []

    edit, update = f"/admin/products/{taken['id']}/edit", f"/admin/products/{taken['id']}"
    wrong = await fill(admin, edit, {"price": "cheap"}, action=update)

    assert wrong.status_code == 422
    assert 'id="f-price-error"' in wrong.text
    assert 'value="cheap"' in wrong.text
    assert f"<h1>Edit {taken['name']}</h1>" in wrong.text
    assert (await product_of(browser.http, taken["id"])).json() == taken


async def test_an_unknown_product_is_a_404_page(admin: Browser) -> None:
    for path in (
        "/admin/products/no-such-id/edit",
        "/admin/products/%2E%2E/edit",
        # A control character (nginx itself refuses a NUL with 400 before the page sees it).
        "/admin/products/a%01b/edit",
    ):
        answer = await admin.get(path)
        assert answer.status_code == 404, path
        assert "<h1>Product not found</h1>" in answer.text
    token = csrf_token((await admin.get("/admin/products")).text)
    saved = await admin.http.post(
        "/admin/products/no-such-id", data={"csrf_token": token, "price": "2.00"}
    )
    assert saved.status_code == 404


async def test_markup_in_a_name_is_shown_as_text(admin: Browser) -> None:
    word = unique("zq")
    product = await add_product(admin, name=f"<script>alert(1)</script> {word}")

    table = await admin.get("/admin/products", params={"q": word})
    form = await admin.get(f"/admin/products/{product['id']}/edit")

    for page in (table, form):
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "<script>alert(1)" not in page.text
    assert 'data-confirm="Delete &lt;script&gt;alert(1)&lt;/script&gt;' in table.text


@pytest.mark.parametrize("form", ["create", "edit", "delete"])
async def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    admin: Browser, browser: Browser, form: str
) -> None:
    product = await add_product(admin)
    category = unique("t")
    action, data = {
        "create": (
            "/admin/products",
            {"sku": unique("SKU-"), "name": "X", "price": "1.00", "category": category},
        ),
        "edit": (f"/admin/products/{product['id']}", {"price": "1.00", "stock": "0"}),
        "delete": (f"/admin/products/{product['id']}/delete", {}),
    }[form]

    answer = await admin.http.post(action, data=data)

    assert answer.status_code == 403
    assert "location" not in answer.headers
    assert (await product_of(browser.http, product["id"])).json() == product
    assert await in_category(browser.http, category) == []


async def test_the_orders_page_lists_every_order_and_filters_by_status(
    admin: Browser, browser: Browser
) -> None:
    product = await add_product(admin, name=unique("Teapot "), stock="10")
    [shopper] = await sign_up(browser.http, 1)
    kept, dropped = [await place(browser.http, shopper, product["id"], n) for n in (2, 3)]
    await wait_settled(browser.http, [(shopper, kept), (shopper, dropped)])
    cancel = await browser.http.post(f"/api/v1/orders/{dropped}/cancel", headers=shopper.headers)
    assert cancel.status_code == 200, cancel.text
    await profile_made(browser.http, shopper)
    two, three = (f"{n} \N{MULTIPLICATION SIGN} {product['name']}" for n in (2, 3))

    async def listed(status: str | None = None) -> set[str]:
        """Which of the two orders /admin/orders shows, filtered by ``status``."""
        page = await admin.get("/admin/orders", params={"status": status} if status else {})
        assert page.status_code == 200
        if status in {"confirmed", "cancelled"}:
            assert f'<option value="{status}" selected>' in page.text
        return {line for line in (two, three) if line in page.text}

    assert shopper.username in (await admin.get("/admin/orders")).text
    assert await listed() == {two, three}
    assert await listed("confirmed") == {two}
    assert await listed("cancelled") == {three}
    assert await listed("pending") == set()
    assert await listed("shipped") == {two, three}  # a status outside the list filters nothing


async def place(http: httpx.AsyncClient, shopper: Shopper, product_id: str, quantity: int) -> str:
    body = {"items": [{"product_id": product_id, "quantity": quantity}]}
    answer = await http.post("/api/v1/orders", json=body, headers=shopper.headers)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


async def profile_made(http: httpx.AsyncClient, shopper: Shopper, within: float = 10) -> None:
    """Wait for the shopper's profile (made from the user.registered event)."""
    deadline = time.monotonic() + within
    while (await http.get("/api/v1/users/me", headers=shopper.headers)).status_code != 200:
        assert time.monotonic() < deadline, "no profile"
        await asyncio.sleep(0.05)
