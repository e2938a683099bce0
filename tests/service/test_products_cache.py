"""Reads are cached, every write invalidates, and HTTP validators answer 304."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import event, update

from mercato.products.models import ProductRow
from support.products import RunningProducts, running_products

pytestmark = pytest.mark.anyio


@pytest.fixture
async def products() -> AsyncIterator[RunningProducts]:
    async with running_products() as running:
        yield running


async def change_behind_the_api(products: RunningProducts, product_id: str, name: str) -> None:
    """Change a row directly in the database: what a cached read cannot know about."""
    async with products.context.db.unit_of_work() as uow:
        await uow.session.execute(
            update(ProductRow).where(ProductRow.id == product_id).values(name=name)
        )
        await uow.commit()


async def test_a_read_is_served_from_the_cache_after_a_miss(products: RunningProducts) -> None:
    product = await products.create(sku="C1", name="Cached")
    url = f"/products/{product['id']}"
    first = await products.client.get(url)
    await change_behind_the_api(products, product["id"], "Changed behind the API")
    assert (await products.client.get(url)).json()["name"] == "Cached"  # a hit
    listing = await products.client.get("/products")
    await change_behind_the_api(products, product["id"], "Changed again")
    assert (await products.client.get("/products")).json() == listing.json()
    assert first.headers["etag"] == (await products.client.get(url)).headers["etag"]


async def test_without_the_cache_every_read_sees_the_database() -> None:
    async with running_products(products_cache_enabled=False) as products:
        product = await products.create(sku="C2", name="Uncached")
        url = f"/products/{product['id']}"
        await products.client.get(url)
        await change_behind_the_api(products, product["id"], "Changed")
        assert (await products.client.get(url)).json()["name"] == "Changed"


async def test_every_write_is_visible_to_the_next_read(products: RunningProducts) -> None:
    product = await products.create(sku="W1", name="Before", price="1.00")
    url = f"/products/{product['id']}"
    priced = f"/products?ids={product['id']}"  # how orders snapshots prices
    for path in (url, "/products", "/products?sort=name&q=before", priced):
        assert (await products.client.get(path)).status_code == 200  # warm every entry
    await products.client.patch(url, json={"name": "After"}, headers=products.admin)
    assert (await products.client.get(url)).json()["name"] == "After"
    assert (await products.client.get(priced)).json()["items"][0]["name"] == "After"
    assert (await products.client.get("/products")).json()["items"][0]["name"] == "After"
    assert (await products.client.get("/products?sort=name&q=before")).json()["total"] == 0

    other = await products.create(sku="W2", name="Newcomer")
    assert (await products.client.get("/products")).json()["total"] == 2
    await products.client.delete(f"/products/{other['id']}", headers=products.admin)
    assert (await products.client.get(f"/products/{other['id']}")).status_code == 404
    assert (await products.client.get("/products")).json()["total"] == 1


async def test_reads_carry_http_caching_headers(products: RunningProducts) -> None:
    product = await products.create(sku="H1", name="Headers")
    one = await products.client.get(f"/products/{product['id']}")
    assert one.headers["cache-control"] == "public, max-age=60"
    assert one.headers["etag"].startswith('"')  # strong
    assert one.headers["last-modified"].endswith(" GMT")
    listing = await products.client.get("/products")
    assert listing.headers["cache-control"] == "public, max-age=30"
    assert listing.headers["etag"].startswith('"')


async def test_max_age_is_configurable() -> None:
    async with running_products(product_max_age=5, product_list_max_age=0) as products:
        product = await products.create(sku="H2", name="Short")
        one = await products.client.get(f"/products/{product['id']}")
        assert one.headers["cache-control"] == "public, max-age=5"
        listing = await products.client.get("/products")
        assert listing.headers["cache-control"] == "public, max-age=0"


async def test_a_matching_validator_answers_304_until_a_write(products: RunningProducts) -> None:
    product = await products.create(sku="E1", name="Tagged")
    url = f"/products/{product['id']}"
    first = await products.client.get(url)
    etag = first.headers["etag"]

    again = await products.client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    weak = await products.client.get(url, headers={"If-None-Match": f'"nope", W/{etag}'})
    assert weak.status_code == 304
    since = await products.client.get(
        url, headers={"If-Modified-Since": first.headers["last-modified"]}
    )
    assert since.status_code == 304

    await products.client.patch(url, json={"price": "2.00"}, headers=products.admin)
    changed = await products.client.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.json()["price"] == "2.00"
    assert changed.headers["etag"] != etag


async def test_a_list_answers_304_until_the_catalogue_changes(products: RunningProducts) -> None:
    await products.create(sku="L1", name="Listed")
    etag = (await products.client.get("/products")).headers["etag"]
    assert (
        await products.client.get("/products", headers={"If-None-Match": etag})
    ).status_code == 304
    other_page = await products.client.get("/products?limit=1", headers={"If-None-Match": etag})
    assert other_page.status_code == 200
    await products.create(sku="L2", name="Another")
    assert (
        await products.client.get("/products", headers={"If-None-Match": etag})
    ).status_code == 200


async def test_a_wrong_validator_gets_the_full_body(products: RunningProducts) -> None:
    product = await products.create(sku="E2", name="Body")
    response = await products.client.get(
        f"/products/{product['id']}", headers={"If-None-Match": '"stale"'}
    )
    assert response.status_code == 200
    assert response.json()["sku"] == "E2"


async def test_a_write_on_one_instance_is_seen_by_the_next_read_on_another(
    tmp_path: Path,
) -> None:
    """Two instances, each with its own memory cache, over one database: the writer's
    broadcast drops the other's local copies before the write returns."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'products.db'}"
    async with (
        running_products(products_database_url=url) as one,
        running_products(products_database_url=url) as two,
    ):
        product = await one.create(sku="B1", name="Before")
        path = f"/products/{product['id']}"
        assert (await two.client.get(path)).json()["name"] == "Before"  # cached on two
        assert (await two.client.get("/products")).json()["total"] == 1
        await one.client.patch(path, json={"name": "After"}, headers=one.admin)
        assert (await two.client.get(path)).json()["name"] == "After"
        assert (await two.client.get("/products")).json()["items"][0]["name"] == "After"
        await one.create(sku="B2", name="Second")
        assert (await two.client.get("/products")).json()["total"] == 2


async def test_concurrent_misses_query_the_database_once(products: RunningProducts) -> None:
    product = await products.create(sku="SF", name="Single flight")
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "FROM products" in statement:
            statements.append(statement)

    engine = products.context.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        responses = await asyncio.gather(
            *(products.client.get(f"/products/{product['id']}") for _ in range(20))
        )
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert {response.status_code for response in responses} == {200}
    assert len({response.headers["etag"] for response in responses}) == 1
    assert len(statements) == 1


async def test_cache_outcomes_are_counted_in_the_metrics(products: RunningProducts) -> None:
    product = await products.create(sku="M1", name="Metered")
    for _ in range(3):
        await products.client.get(f"/products/{product['id']}")
    metrics = (await products.client.get("/metrics")).text
    assert 'products_cache_reads_total{outcome="miss"} 1.0' in metrics
    assert 'products_cache_reads_total{outcome="local"} 2.0' in metrics
