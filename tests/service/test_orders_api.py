"""The orders rows of API.md, through the orders app in-process, with a stand-in products
service on a real port."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest

from support.auth import admin_headers, auth_headers
from support.orders import OrdersHarness, ProductsStub

pytestmark = pytest.mark.anyio


ALICE = auth_headers("alice")
BOB = auth_headers("bob")


async def test_a_placed_order_is_located_under_the_public_api_even_on_a_replay(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    body = {"items": [{"product_id": products.add(), "quantity": 1}]}
    plain = await orders.client.post("/orders", json=body, headers=ALICE)
    assert plain.headers["location"] == f"/api/v1/orders/{plain.json()['id']}"
    keyed = {**ALICE, "Idempotency-Key": "located-1"}
    first = await orders.client.post("/orders", json=body, headers=keyed)
    replay = await orders.client.post("/orders", json=body, headers=keyed)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.headers["location"] == first.headers["location"]
    assert first.headers["location"] == f"/api/v1/orders/{first.json()['id']}"
    refused = await orders.client.post("/orders", json={"items": []}, headers=ALICE)
    assert "location" not in refused.headers


async def test_placing_an_order_snapshots_prices_and_answers_pending(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    p1 = products.add(price="19.99", name="Mug")
    p2 = products.add(price="0.50", name="Spoon")
    body = {"items": [{"product_id": p1, "quantity": 2}, {"product_id": p2, "quantity": 3}]}
    response = await orders.client.post("/orders", json=body, headers=ALICE)
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "pending"
    assert order["user_id"] == "alice"
    assert order["total"] == "41.48"
    assert order["currency"] == "USD"
    assert order["items"] == [
        {
            "product_id": p1,
            "name": "Mug",
            "quantity": 2,
            "unit_price": "19.99",
            "line_total": "39.98",
        },
        {
            "product_id": p2,
            "name": "Spoon",
            "quantity": 3,
            "unit_price": "0.50",
            "line_total": "1.50",
        },
    ]
    assert order["created_at"].endswith("Z")
    products.products[p1]["price"] = "99.00"  # a later price change leaves the order alone
    again = await orders.client.get(f"/orders/{order['id']}", headers=ALICE)
    assert again.json()["total"] == "41.48"
    assert await orders.outbox("order.placed") == 1


async def test_an_unknown_product_is_422_and_writes_nothing(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    known = products.add()
    body = {"items": [{"product_id": known, "quantity": 1}, {"product_id": "nope", "quantity": 1}]}
    response = await orders.client.post("/orders", json=body, headers=ALICE)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"] == [
        {"loc": ["body", "items", 1, "product_id"], "msg": "unknown product"}
    ]
    assert await orders.orders() == 0
    assert await orders.outbox() == 0


@pytest.mark.parametrize(
    "body",
    [
        {"items": []},
        {"items": [{"product_id": "p", "quantity": 0}]},
        {"items": [{"product_id": "p", "quantity": 101}]},
        {"items": [{"product_id": "p", "quantity": 1}, {"product_id": "p", "quantity": 2}]},
        {"items": [{"product_id": str(i), "quantity": 1} for i in range(51)]},
        {"items": [{"product_id": "p", "quantity": 1}], "status": "confirmed"},
        {"items": [{"product_id": "p", "quantity": 1, "unit_price": "0.01"}]},
        {},
        {"items": [{"product_id": "p", "quantity": True}]},
        {"items": [{"product_id": "p", "quantity": "2"}]},
        {"items": [{"product_id": "p", "quantity": 2.5}]},
        {"items": [{"product_id": "p", "quantity": 1}], "shipping_address": "1 Main St\x00"},
        {"items": [{"product_id": "p\x00", "quantity": 1}]},
        {"items": [{"product_id": 7, "quantity": 1}]},
        {"items": {"product_id": "p", "quantity": 1}},
    ],
    ids=[
        "empty",
        "zero",
        "too-many-units",
        "duplicate",
        "51-items",
        "extra",
        "price",
        "none",
        "bool-quantity",
        "string-quantity",
        "float-quantity",
        "nul-address",
        "nul-product",
        "number-product",
        "items-not-a-list",
    ],
)
async def test_invalid_bodies_are_422_problems_and_change_nothing(
    orders: OrdersHarness, products: ProductsStub, body: dict[str, object]
) -> None:
    products.add("p")
    response = await orders.client.post("/orders", json=body, headers=ALICE)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"]
    assert await orders.orders() == 0
    assert products.requests == 0


async def test_mixed_currencies_are_422(orders: OrdersHarness, products: ProductsStub) -> None:
    usd, eur = products.add(currency="USD"), products.add(currency="EUR")
    body = {"items": [{"product_id": usd, "quantity": 1}, {"product_id": eur, "quantity": 1}]}
    response = await orders.client.post("/orders", json=body, headers=ALICE)
    assert response.status_code == 422
    assert await orders.orders() == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/orders"), ("GET", "/orders"), ("GET", "/orders/x"), ("POST", "/orders/x/cancel")],
)
async def test_every_route_needs_a_token(orders: OrdersHarness, method: str, path: str) -> None:
    response = await orders.client.request(method, path, json={"items": []})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    bad = await orders.client.request(
        method, path, json={"items": []}, headers={"Authorization": "Bearer not-a-token"}
    )
    assert bad.status_code == 401


async def _place(orders: OrdersHarness, products: ProductsStub, headers: dict[str, str]) -> str:
    pid = products.add()
    body = {"items": [{"product_id": pid, "quantity": 1}]}
    response = await orders.client.post("/orders", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_an_order_is_visible_to_its_owner_and_admins_only(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    order_id = await _place(orders, products, ALICE)
    assert (await orders.client.get(f"/orders/{order_id}", headers=ALICE)).status_code == 200
    assert (
        await orders.client.get(f"/orders/{order_id}", headers=admin_headers())
    ).status_code == 200
    hidden = await orders.client.get(f"/orders/{order_id}", headers=BOB)
    assert hidden.status_code == 404
    assert hidden.json()["status"] == 404
    assert (await orders.client.get("/orders/does-not-exist", headers=ALICE)).status_code == 404


async def test_listing_shows_own_orders_newest_first_and_pages(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    mine = [await _place(orders, products, ALICE) for _ in range(3)]
    await _place(orders, products, BOB)
    page = (await orders.client.get("/orders?limit=2", headers=ALICE)).json()
    assert page["total"] == 3
    assert page["limit"] == 2
    assert page["offset"] == 0
    assert [o["id"] for o in page["items"]] == mine[::-1][:2]
    rest = (await orders.client.get("/orders?limit=2&offset=2", headers=ALICE)).json()
    assert [o["id"] for o in rest["items"]] == [mine[0]]


async def test_admin_lists_everyones_orders_with_all_true(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    await _place(orders, products, ALICE)
    await _place(orders, products, BOB)
    everyone = (await orders.client.get("/orders?all=true", headers=admin_headers())).json()
    assert everyone["total"] == 2
    own = (await orders.client.get("/orders", headers=admin_headers())).json()
    assert own["total"] == 0
    refused = await orders.client.get("/orders?all=true", headers=ALICE)
    assert refused.status_code == 403


async def test_orders_are_filtered_by_status(orders: OrdersHarness, products: ProductsStub) -> None:
    pending = await _place(orders, products, ALICE)
    cancelled = await _place(orders, products, BOB)
    assert (await orders.client.post(f"/orders/{cancelled}/cancel", headers=BOB)).status_code == 200

    def ids(page: dict[str, Any]) -> list[str]:
        return [order["id"] for order in page["items"]]

    admin = admin_headers()
    only = (await orders.client.get("/orders?all=true&status=cancelled", headers=admin)).json()
    assert (ids(only), only["total"]) == ([cancelled], 1)
    only = (await orders.client.get("/orders?all=true&status=pending", headers=admin)).json()
    assert (ids(only), only["total"]) == ([pending], 1)
    none = (await orders.client.get("/orders?status=cancelled", headers=ALICE)).json()
    assert (ids(none), none["total"]) == ([], 0)  # Bob's cancelled order is not Alice's


@pytest.mark.parametrize("status", ["shipped", "PENDING", ""])
async def test_a_status_outside_the_list_is_422(orders: OrdersHarness, status: str) -> None:
    response = await orders.client.get(f"/orders?all=true&status={status}", headers=admin_headers())
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", "status"]


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "offset=-1", "limit=x"])
async def test_out_of_range_paging_is_422(orders: OrdersHarness, query: str) -> None:
    response = await orders.client.get(f"/orders?{query}", headers=ALICE)
    assert response.status_code == 422


async def test_the_owner_cancels_a_pending_order_once(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    order_id = await _place(orders, products, ALICE)
    response = await orders.client.post(f"/orders/{order_id}/cancel", headers=ALICE)
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert await orders.status_of(order_id, ALICE) == "cancelled"
    assert await orders.outbox("order.cancelled") == 1
    again = await orders.client.post(f"/orders/{order_id}/cancel", headers=ALICE)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert await orders.outbox("order.cancelled") == 1


async def test_only_the_owner_or_an_admin_may_cancel(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    order_id = await _place(orders, products, ALICE)
    assert (await orders.client.post(f"/orders/{order_id}/cancel", headers=BOB)).status_code == 404
    assert await orders.status_of(order_id, ALICE) == "pending"
    by_admin = await orders.client.post(f"/orders/{order_id}/cancel", headers=admin_headers())
    assert by_admin.status_code == 200
    assert by_admin.json()["status"] == "cancelled"


async def test_the_order_total_is_exact_for_many_lines(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    ids = [products.add(price="0.10") for _ in range(50)]
    body = {"items": [{"product_id": pid, "quantity": 3} for pid in ids]}
    response = await orders.client.post("/orders", json=body, headers=ALICE)
    assert response.status_code == 201
    assert Decimal(response.json()["total"]) == Decimal("15.00")


async def test_an_order_of_fifty_products_is_priced_in_one_request(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    """DESIGN.md: one ``GET /products?ids=`` for the whole order, never one per line (and
    not cut to the catalogue's default page of 20)."""
    ids = [products.add(price=f"{n + 1}.25", name=f"Thing {n}") for n in range(50)]
    body = {"items": [{"product_id": pid, "quantity": 1} for pid in reversed(ids)]}
    response = await orders.client.post("/orders", json=body, headers=ALICE)
    assert response.status_code == 201, response.text
    assert products.requests == 1
    assert sorted(products.asked[0]) == sorted(ids)
    lines = response.json()["items"]
    assert [line["product_id"] for line in lines] == list(reversed(ids))  # the order's order
    assert [(line["name"], line["unit_price"]) for line in lines] == [
        (f"Thing {n}", f"{n + 1}.25") for n in reversed(range(50))
    ]
    assert response.json()["total"] == f"{sum(n + 1.25 for n in range(50)):.2f}"


async def test_a_catalogue_answering_503_is_a_503_after_its_retry(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    products.failing_with = 503
    body = {"items": [{"product_id": products.add(), "quantity": 1}]}
    response = await orders.client.post("/orders", json=body, headers=ALICE)
    assert response.status_code == 503
    assert response.json()["dependency"] == "upstream service"
    assert products.requests == 2  # the one call, retried once (service_call_retries=1)
    assert await orders.orders() == 0


async def test_products_down_is_a_503_problem_and_writes_nothing(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    body = {"items": [{"product_id": products.add(), "quantity": 1}]}
    await products.stop()
    for _ in range(3):  # enough failures to open the breaker (1 try + 1 retry each)
        response = await orders.client.post("/orders", json=body, headers=ALICE)
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert "retry-after" in response.headers
        assert response.json()["dependency"] == "upstream service"
        assert "127.0.0.1" not in response.text
    breaker = orders.app.state.orders.catalogue.client.breaker
    assert breaker.state.value == "open"
    metrics = (await orders.client.get("/metrics")).text
    assert re.search(
        r'^upstream_circuit_state\{address="127\.0\.0\.1:\d+",service="orders",'
        r'upstream="products"\} 2\.0$',
        metrics,
        re.MULTILINE,
    )
    assert await orders.orders() == 0
    assert await orders.outbox() == 0
    await products.start()
    breaker.reset()
    assert (await orders.client.post("/orders", json=body, headers=ALICE)).status_code == 201


@pytest.mark.parametrize("failing", ["claim", "complete"])
async def test_a_database_outage_on_the_idempotent_path_is_a_503_and_the_retry_works(
    orders: OrdersHarness,
    products: ProductsStub,
    monkeypatch: pytest.MonkeyPatch,
    failing: str,
) -> None:
    """The connection is lost while the key is claimed, or while the order is written
    with it: 503 naming the database, nothing half-done, and the client's retry places
    the order once."""
    from mercato.orders.repository import IdempotencyRepository
    from support.outages import closed_mid_query

    async def lost(*args: object, **kwargs: object) -> None:
        raise closed_mid_query()

    body = {"items": [{"product_id": products.add(), "quantity": 1}]}
    keyed = {**ALICE, "Idempotency-Key": f"outage-{failing}"}
    with monkeypatch.context() as patch:
        patch.setattr(IdempotencyRepository, failing, lost)
        response = await orders.client.post("/orders", json=body, headers=keyed)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert response.json()["dependency"] == "database"
    assert await orders.orders() == 0
    retry = await orders.client.post("/orders", json=body, headers=keyed)
    assert retry.status_code == 201, retry.text
    again = await orders.client.post("/orders", json=body, headers=keyed)
    assert again.json()["id"] == retry.json()["id"]
    assert await orders.orders() == 1
