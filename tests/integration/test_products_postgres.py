"""The products service on real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from support.products import RunningProducts, race_for_stock, running_products

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_concurrent_orders_never_oversell_on_postgres(postgres_url: str) -> None:
    async with running_products(database_url=postgres_url) as products:
        await race_for_stock(products, orders=30)


async def test_crud_search_and_money_on_postgres(postgres_url: str) -> None:
    async with running_products(database_url=postgres_url) as products:
        lamp = await products.create(sku="L", name="Desk Lamp", price="9999999999.99")
        await products.create(sku="M", name="100% Mug", price="0.01", category="kitchen")
        page = (await products.client.get("/products", params={"q": "100%"})).json()
        assert [item["sku"] for item in page["items"]] == ["M"]
        assert (await products.client.get("/products", params={"q": "LAMP"})).json()["total"] == 1
        cheap = (await products.client.get("/products", params={"max_price": "0.01"})).json()
        assert [item["price"] for item in cheap["items"]] == ["0.01"]
        fetched = (await products.client.get(f"/products/{lamp['id']}")).json()
        assert fetched["price"] == "9999999999.99"
        response = await products.client.patch(
            f"/products/{lamp['id']}", json={"price": "10.10"}, headers=products.admin
        )
        assert response.json()["price"] == "10.10"


async def test_search_has_trigram_indexes_on_postgres(postgres_url: str) -> None:
    async with running_products(database_url=postgres_url) as products:
        async with products.context.db.unit_of_work(read_only=True) as uow:
            indexes = set(
                (
                    await uow.session.execute(
                        text("SELECT indexname FROM pg_indexes WHERE tablename = 'products'")
                    )
                ).scalars()
            )
        assert {"ix_products_name_trgm", "ix_products_description_trgm"} <= indexes


async def test_two_instances_sharing_redis_never_serve_a_stale_read(
    postgres_url: str, redis_url: str
) -> None:
    """A write through one instance is seen by the next read through the other."""
    # A Redis database of its own: lists are keyed by their query, not by the database.
    settings = {"database_url": postgres_url, "redis_url": redis_url.rsplit("/", 1)[0] + "/11"}
    async with running_products(**settings) as one, running_products(**settings) as two:
        await one.catalogue.invalidate()
        product = await one.create(sku="S", name="Shared", stock=1)
        url = f"/products/{product['id']}"
        assert (await two.client.get(url)).json()["name"] == "Shared"  # cached in Redis
        assert (await two.client.get("/products")).json()["total"] == 1
        await one.client.patch(url, json={"name": "Renamed"}, headers=one.admin)
        assert (await two.client.get(url)).json()["name"] == "Renamed"
        assert (await two.client.get("/products")).json()["items"][0]["name"] == "Renamed"


async def test_a_local_layer_before_redis_is_dropped_on_every_instance(
    postgres_url: str, redis_url: str
) -> None:
    """With PRODUCTS_LOCAL_CACHE_TTL, reads are served from memory; a write on one instance
    drops the copies on the other through the Redis broadcast."""
    settings = {
        "database_url": postgres_url,
        "redis_url": redis_url.rsplit("/", 1)[0] + "/11",
        "products_local_cache_ttl": 60,
    }
    async with running_products(**settings) as one, running_products(**settings) as two:
        await one.catalogue.invalidate()
        product = await one.create(sku="LL", name="Local")
        path = f"/products/{product['id']}"
        assert (await two.client.get(path)).json()["name"] == "Local"
        await change_in_redis_only(two, product["id"])
        assert (await two.client.get(path)).json()["name"] == "Local"  # from the local layer
        await one.client.patch(path, json={"name": "Changed"}, headers=one.admin)
        # Redis pub/sub delivers asynchronously: the other instance hears it within moments.
        await eventually_named(two, path, "Changed")


async def change_in_redis_only(products: RunningProducts, product_id: str) -> None:
    """Drop the shared copy, so that only the local layer can still answer."""
    assert products.context.cache is not None
    await products.context.cache.delete(f"product:{product_id}")


async def eventually_named(products: RunningProducts, path: str, name: str) -> None:
    for _ in range(200):
        if (await products.client.get(path)).json()["name"] == name:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{path} never showed {name!r}")


async def test_nul_characters_are_refused_not_a_server_error(postgres_url: str) -> None:
    """PostgreSQL text cannot hold NUL: every way in answers 4xx, never 500."""
    async with running_products(database_url=postgres_url) as products:
        product = await products.create(sku="NUL", name="Plain")
        client, admin = products.client, products.admin
        for params in ({"q": "a\x00b"}, {"category": "\x00"}):
            assert (await client.get("/products", params=params)).status_code == 422
        assert (await client.get("/products/a%00b")).status_code == 404
        bad = {"sku": "N\x00", "name": "n", "price": "1.00"}
        assert (await client.post("/products", json=bad, headers=admin)).status_code == 422
        url = f"/products/{product['id']}"
        renamed = await client.patch(url, json={"name": "a\x00"}, headers=admin)
        assert renamed.status_code == 422
        assert (
            await client.patch("/products/a%00", json={"name": "x"}, headers=admin)
        ).status_code == 404
        assert (await client.delete("/products/a%00", headers=admin)).status_code == 404
