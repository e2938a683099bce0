"""Every products row of API.md, in-process on the embedded backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from support.auth import auth_headers
from support.products import RunningProducts, running_products

pytestmark = pytest.mark.anyio

PRODUCT_FIELDS = {
    "id",
    "sku",
    "name",
    "description",
    "price",
    "currency",
    "category",
    "stock",
    "created_at",
    "updated_at",
}


@pytest.fixture
async def products() -> AsyncIterator[RunningProducts]:
    async with running_products() as running:
        yield running


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]
    return body


# --- POST /products -----------------------------------------------------------------------


async def test_an_admin_creates_a_product_with_defaults(products: RunningProducts) -> None:
    response = await products.client.post(
        "/products",
        json={"sku": "LAMP-1", "name": "Desk Lamp", "price": "19.99"},
        headers=products.admin,
    )
    assert response.status_code == 201
    product = response.json()
    assert set(product) == PRODUCT_FIELDS
    assert product["price"] == "19.99"
    assert (product["description"], product["category"], product["stock"]) == ("", "general", 0)
    assert product["currency"] == "USD"
    assert product["created_at"].endswith("Z")
    fetched = await products.client.get(f"/products/{product['id']}")
    assert fetched.json() == product
    assert response.headers["location"] == f"/api/v1/products/{product['id']}"


async def test_a_price_is_a_decimal_string_kept_exactly(products: RunningProducts) -> None:
    assert (await products.create(sku="S", price="0.10"))["price"] == "0.10"
    assert (await products.create(sku="I", price="7"))["price"] == "7.00"
    assert (await products.create(sku="O", price="7.5"))["price"] == "7.50"


@pytest.mark.parametrize(
    "price",
    [
        b"0.10",  # a JSON number passes through a float: money is a decimal string
        b"7",
        b"true",
        b'"1_000"',
        b'"1e3"',
        b'"1,00"',
        b'" 1.00"',
        b'"+1.00"',
        b'""',
        b'"Infinity"',
        b'"0.1000000000000000055511151231257827"',
    ],
)
async def test_a_price_that_is_not_a_plain_decimal_string_is_refused(
    products: RunningProducts, price: bytes
) -> None:
    response = await products.client.post(
        "/products",
        content=b'{"sku": "P", "name": "p", "price": ' + price + b"}",
        headers={**products.admin, "content-type": "application/json"},
    )
    problem = assert_problem(response, 422)
    assert [error["loc"] for error in problem["errors"]] == [["body", "price"]]
    assert (await products.client.get("/products")).json()["total"] == 0


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"stock": True}, "stock"),
        ({"stock": "5"}, "stock"),
        ({"name": 5}, "name"),
        ({"name": "bad\x00name"}, "name"),
        ({"description": "nul\x00here"}, "description"),
        ({"sku": "S\x00"}, "sku"),
        ({"category": True}, "category"),
    ],
)
async def test_types_are_strict_and_text_refuses_nul(
    products: RunningProducts, change: dict[str, Any], where: str
) -> None:
    body = {"sku": "OK-1", "name": "fine", "price": "1.00", **change}
    response = await products.client.post("/products", json=body, headers=products.admin)
    problem = assert_problem(response, 422)
    assert any(error["loc"][:2] == ["body", where] for error in problem["errors"]), problem
    created = await products.create(sku="OK-2")
    patched = await products.client.patch(
        f"/products/{created['id']}", json=change, headers=products.admin
    )
    if where != "sku":  # sku cannot be patched at all
        problem = assert_problem(patched, 422)
        assert any(error["loc"][:2] == ["body", where] for error in problem["errors"])


async def test_deeply_nested_json_is_a_400_not_a_500(products: RunningProducts) -> None:
    deep = b'{"sku": "D", "name": "d", "price": "1.00", "category": ' + b"[" * 100_000
    deep += b"]" * 100_000 + b"}"
    for method, path in (("POST", "/products"), ("PATCH", "/products/some-id")):
        response = await products.client.request(
            method,
            path,
            content=deep,
            headers={**products.admin, "content-type": "application/json"},
        )
        assert_problem(response, 400)
    assert (await products.client.get("/products")).json()["total"] == 0


async def test_creating_needs_an_admin_token(products: RunningProducts) -> None:
    body = {"sku": "X", "name": "x", "price": "1.00"}
    anonymous = await products.client.post("/products", json=body)
    assert_problem(anonymous, 401)
    assert anonymous.headers["www-authenticate"] == "Bearer"
    bad_token = await products.client.post(
        "/products", json=body, headers={"Authorization": "Bearer not-a-token"}
    )
    assert_problem(bad_token, 401)
    customer = await products.client.post("/products", json=body, headers=auth_headers("u1"))
    assert_problem(customer, 403)
    assert (await products.client.get("/products")).json()["total"] == 0


async def test_a_duplicate_sku_is_a_conflict(products: RunningProducts) -> None:
    await products.create(sku="DUP", name="first")
    response = await products.client.post(
        "/products", json={"sku": "DUP", "name": "second", "price": "2.00"}, headers=products.admin
    )
    assert_problem(response, 409)
    assert (await products.client.get("/products")).json()["total"] == 1


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"price": "0"}, "price"),
        ({"price": "-1.00"}, "price"),
        ({"price": "1.999"}, "price"),
        ({"price": "NaN"}, "price"),
        ({"price": "10000000000.00"}, "price"),
        ({"price": None}, "price"),
        ({"stock": -1}, "stock"),
        ({"stock": 1.5}, "stock"),
        ({"name": ""}, "name"),
        ({"name": "n" * 201}, "name"),
        ({"sku": ""}, "sku"),
        ({"sku": "s" * 65}, "sku"),
        ({"currency": "dollars"}, "currency"),
        ({"roles": ["admin"]}, "roles"),
        ({"id": "mine"}, "id"),
    ],
)
async def test_invalid_products_are_refused(
    products: RunningProducts, change: dict[str, Any], where: str
) -> None:
    body = {"sku": "OK-1", "name": "fine", "price": "1.00", **change}
    response = await products.client.post("/products", json=body, headers=products.admin)
    problem = assert_problem(response, 422)
    assert any(error["loc"][:2] == ["body", where] for error in problem["errors"]), problem
    assert (await products.client.get("/products")).json()["total"] == 0


async def test_a_missing_field_or_broken_json_is_refused(products: RunningProducts) -> None:
    missing = await products.client.post(
        "/products", json={"sku": "A", "name": "a"}, headers=products.admin
    )
    assert ["body", "price"] in [e["loc"] for e in assert_problem(missing, 422)["errors"]]
    broken = await products.client.post(
        "/products",
        content=b'{"sku": "A",',
        headers={**products.admin, "content-type": "application/json"},
    )
    assert_problem(broken, 422)
    not_an_object = await products.client.post("/products", json=[1], headers=products.admin)
    assert_problem(not_an_object, 422)


# --- GET /products/{id} -------------------------------------------------------------------


async def test_an_unknown_product_is_not_found(products: RunningProducts) -> None:
    response = await products.client.get("/products/00000000-0000-0000-0000-000000000000")
    assert_problem(response, 404)
    odd = await products.client.get("/products/' OR '1'='1")
    assert_problem(odd, 404)


# --- PATCH /products/{id} -----------------------------------------------------------------


async def test_an_admin_changes_some_fields(products: RunningProducts) -> None:
    product = await products.create(sku="CUP", name="Cup", price="4.00", stock=2)
    response = await products.client.patch(
        f"/products/{product['id']}",
        json={"price": "4.50", "stock": 10, "category": "Kitchen"},
        headers=products.admin,
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert (changed["price"], changed["stock"], changed["category"]) == ("4.50", 10, "kitchen")
    assert (changed["sku"], changed["name"]) == ("CUP", "Cup")
    assert changed["updated_at"] >= product["updated_at"]
    assert (await products.client.get(f"/products/{product['id']}")).json() == changed


async def test_patch_refuses_sku_nulls_bad_values_and_strangers(products: RunningProducts) -> None:
    product = await products.create(sku="PEN", name="Pen")
    url = f"/products/{product['id']}"
    for body in ({"sku": "OTHER"}, {"name": None}, {"price": "0"}, {"stock": -5}):
        assert_problem(await products.client.patch(url, json=body, headers=products.admin), 422)
    assert_problem(await products.client.patch(url, json={"name": "x"}), 401)
    assert_problem(
        await products.client.patch(url, json={"name": "x"}, headers=auth_headers("u1")), 403
    )
    assert (await products.client.get(url)).json() == product


async def test_patching_an_unknown_product_is_not_found(products: RunningProducts) -> None:
    response = await products.client.patch(
        "/products/nope", json={"name": "x"}, headers=products.admin
    )
    assert_problem(response, 404)


# --- DELETE /products/{id} ----------------------------------------------------------------


async def test_an_admin_deletes_a_product(products: RunningProducts) -> None:
    product = await products.create(sku="GONE", name="Gone")
    url = f"/products/{product['id']}"
    assert_problem(await products.client.delete(url), 401)
    assert_problem(await products.client.delete(url, headers=auth_headers("u1")), 403)
    response = await products.client.delete(url, headers=products.admin)
    assert response.status_code == 204
    assert response.content == b""
    assert_problem(await products.client.get(url), 404)
    assert_problem(await products.client.delete(url, headers=products.admin), 404)


# --- events -------------------------------------------------------------------------------


async def test_every_write_is_announced_through_the_outbox(products: RunningProducts) -> None:
    product = await products.create(sku="EVT", name="Evented", price="3.30", stock=4)
    url = f"/products/{product['id']}"
    await products.client.patch(url, json={"name": "Renamed"}, headers=products.admin)
    await products.client.patch(url, json={"name": "Renamed"}, headers=products.admin)  # no-op
    await products.client.delete(url, headers=products.admin)
    events = await products.events()
    assert [event["type"] for event in events] == [
        "product.created",
        "product.updated",
        "product.deleted",
    ]
    created, updated, deleted = (event["data"] for event in events)
    assert created == {
        "product_id": product["id"],
        "sku": "EVT",
        "name": "Evented",
        "price": "3.30",
        "currency": "USD",
        "category": "general",
        "stock": 4,
    }
    assert updated["name"] == "Renamed"
    assert deleted == {"product_id": product["id"], "sku": "EVT"}
    assert all(event["source"] == "products" for event in events)


async def test_a_refused_write_announces_nothing(products: RunningProducts) -> None:
    await products.create(sku="ONCE", name="Once")
    await products.client.post(
        "/products", json={"sku": "ONCE", "name": "x", "price": "1.00"}, headers=products.admin
    )
    assert len(await products.events()) == 1
