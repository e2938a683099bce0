"""Listing: paging, filters (``ids`` among them), the sort allow-list, literal search and
SQL injection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from support.products import RunningProducts, running_products

pytestmark = pytest.mark.anyio

CATALOGUE = [
    {"sku": "A", "name": "Apple Peeler", "price": "5.00", "category": "kitchen"},
    {"sku": "B", "name": "Banana Hook", "price": "12.50", "category": "kitchen"},
    {
        "sku": "C",
        "name": "Cherry Pitter",
        "price": "8.25",
        "category": "kitchen",
        "description": "100% steel",
    },
    {
        "sku": "D",
        "name": "Desk Lamp",
        "price": "30.00",
        "category": "office",
        "description": "warm_white light",
    },
    {"sku": "E", "name": "Eraser", "price": "0.99", "category": "office"},
]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def products() -> AsyncIterator[RunningProducts]:
    """One catalogue for the module: these tests only read."""
    async with running_products() as running:
        for product in CATALOGUE:
            await running.create(**product)
        yield running


async def ids_of(products: RunningProducts, *wanted_skus: str) -> str:
    page = await listing(products)
    by_sku = {item["sku"]: item["id"] for item in page["items"]}
    return ",".join(by_sku[sku] for sku in wanted_skus)


async def listing(products: RunningProducts, **params: Any) -> dict[str, Any]:
    response = await products.client.get("/products", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def skus(page: dict[str, Any]) -> list[str]:
    return [item["sku"] for item in page["items"]]


async def test_a_page_has_items_total_limit_and_offset(products: RunningProducts) -> None:
    page = await listing(products, limit=2, offset=1, sort="name")
    assert skus(page) == ["B", "C"]
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 1)
    default = await listing(products)
    assert (default["limit"], default["offset"], len(default["items"])) == (20, 0, 5)
    beyond = await listing(products, offset=50)
    assert (beyond["items"], beyond["total"]) == ([], 5)


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("name", ["A", "B", "C", "D", "E"]),
        ("price", ["E", "A", "C", "B", "D"]),
        ("-price", ["D", "B", "C", "A", "E"]),
        ("created_at", ["A", "B", "C", "D", "E"]),
        ("-created_at", ["E", "D", "C", "B", "A"]),
    ],
)
async def test_every_allowed_sort(
    products: RunningProducts, sort: str, expected: list[str]
) -> None:
    assert skus(await listing(products, sort=sort)) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"q": "lamp"}, ["D"]),
        ({"q": "STEEL"}, ["C"]),
        ({"category": "office"}, ["D", "E"]),
        ({"category": "Office"}, ["D", "E"]),
        ({"min_price": "8.25"}, ["B", "C", "D"]),
        ({"max_price": "8.25"}, ["A", "C", "E"]),
        ({"min_price": "1", "max_price": "12.5", "category": "kitchen"}, ["A", "B", "C"]),
        ({"q": "e", "category": "office", "max_price": "1.00"}, ["E"]),
    ],
)
async def test_filters_combine(
    products: RunningProducts, params: dict[str, str], expected: list[str]
) -> None:
    page = await listing(products, sort="name", **params)
    assert skus(page) == expected
    assert page["total"] == len(expected)


async def test_ids_list_exactly_those_products_each_once(products: RunningProducts) -> None:
    ids = await ids_of(products, "D", "A", "D")
    page = await listing(products, ids=f"{ids},no-such-product", sort="name")
    assert skus(page) == ["A", "D"]
    assert (page["total"], page["limit"], page["offset"]) == (2, 3, 0)
    other = await listing(products, ids=await ids_of(products, "B"))  # not the cached list
    assert skus(other) == ["B"]
    assert (await listing(products, ids="no-such-product"))["items"] == []


async def test_ids_combine_with_the_other_filters_and_an_explicit_page(
    products: RunningProducts,
) -> None:
    ids = await ids_of(products, "A", "B", "D")
    assert skus(await listing(products, ids=ids, category="kitchen", sort="name")) == ["A", "B"]
    assert skus(await listing(products, ids=ids, max_price="10", q="e")) == ["A"]
    page = await listing(products, ids=ids, sort="-price", limit=1, offset=1)
    assert skus(page) == ["B"]
    assert (page["total"], page["limit"], page["offset"]) == (3, 1, 1)


async def test_a_malformed_ids_list_is_refused_naming_ids(products: RunningProducts) -> None:
    response = await products.client.get("/products", params={"ids": "a,,b"})
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"loc": ["query", "ids"], "msg": "comma-separated ids of 1 to 64 characters, none empty"}
    ]


async def test_an_ids_request_is_not_cut_to_the_default_page() -> None:
    async with running_products() as many:
        created = [await many.create(sku=f"M{n:02}", name=f"Many {n}") for n in range(30)]
        wanted = [product["id"] for product in created[:25]]
        page = await listing(many, ids=",".join(wanted))
        assert sorted(item["id"] for item in page["items"]) == sorted(wanted)
        assert (page["total"], page["limit"]) == (25, 25)
        everything = ",".join(product["id"] for product in created) + ",x" * 70
        assert len((await listing(many, ids=everything))["items"]) == 30  # 100 ids in all


@pytest.mark.parametrize(
    ("q", "expected"),
    [("100%", ["C"]), ("%", ["C"]), ("_", ["D"]), ("warm_white", ["D"]), ("warm%white", [])],
)
async def test_search_text_matches_literally(
    products: RunningProducts, q: str, expected: list[str]
) -> None:
    """``%`` and ``_`` are not wildcards: each matches only itself."""
    assert skus(await listing(products, q=q, sort="name")) == expected


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "ten"},
        {"offset": -1},
        {"sort": "stock"},
        {"sort": "price desc"},
        {"sort": "name; DROP TABLE products"},
        {"min_price": "cheap"},
        {"min_price": "-1"},
        {"max_price": "1.001"},
        {"q": ""},
        {"q": "x" * 201},
        {"category": "c" * 65},
        {"ids": ""},
        {"ids": ","},
        {"ids": "a,,b"},
        {"ids": "a,"},
        {"ids": "a," + "b" * 65},
        {"ids": ",".join(str(n) for n in range(101))},
        {"ids": "a,b\x00"},
    ],
)
async def test_out_of_range_parameters_are_refused(
    products: RunningProducts, params: dict[str, Any]
) -> None:
    response = await products.client.get("/products", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"]


INJECTIONS = [
    "' OR '1'='1",
    "' OR 1=1 --",
    '" OR ""="',
    "'; DROP TABLE products; --",
    "1' UNION SELECT id, sku, name, description, price, currency, category, stock, "
    "version, created_at, updated_at FROM products --",
    "%' OR '%'='",
    "office' OR category LIKE '%",
    "\\' OR 1=1 #",
    "1 OR 1=1",
    "0; SELECT pg_sleep(1)",
]


@pytest.mark.parametrize("payload", INJECTIONS)
@pytest.mark.parametrize("field", ["q", "category", "min_price", "max_price", "sort"])
async def test_sql_injection_in_any_filter_returns_no_extra_rows(
    products: RunningProducts, field: str, payload: str
) -> None:
    response = await products.client.get("/products", params={field: payload})
    if response.status_code == 422:  # refused by validation: nothing was queried
        assert response.headers["content-type"] == "application/problem+json"
    else:
        assert response.status_code == 200, response.text
        assert response.json() == {"items": [], "total": 0, "limit": 20, "offset": 0}
    # The catalogue is intact afterwards.
    assert (await listing(products))["total"] == len(CATALOGUE)
