"""A cache outage: reads go on from the database, writes answer 503 and change nothing."""

from __future__ import annotations

import pytest

from support.products import running_products
from support.servers import free_port

pytestmark = pytest.mark.anyio


async def test_with_the_cache_down_reads_work_and_writes_are_refused() -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    async with running_products(redis_url=dead_redis) as products:
        listing = await products.client.get("/products")
        assert listing.status_code == 200
        assert listing.json()["total"] == 0

        body = {"sku": "DOWN", "name": "Cache down", "price": "1.00"}
        refused = await products.client.post("/products", json=body, headers=products.admin)
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/problem+json"
        assert "retry-after" in refused.headers
        assert refused.json()["dependency"] == "cache"
        assert (await products.client.get("/products")).json()["total"] == 0
        assert await products.events() == []

        ready = await products.client.get("/readyz")
        assert ready.status_code == 503
        assert "cache" in ready.text


async def test_with_the_cache_down_one_product_and_its_304_are_served_from_the_database() -> None:
    from mercato.products.caching import CatalogueCache
    from mercato.products.schemas import ProductCreate
    from mercato.products.service import create_product

    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    async with running_products(redis_url=dead_redis) as products:
        body = ProductCreate(sku="DB", name="From the database", price="2.50")
        behind_the_cache = CatalogueCache(enabled=False)
        row = await create_product(products.context.db, products.outbox, behind_the_cache, body)
        one = await products.client.get(f"/products/{row.id}")
        assert one.status_code == 200
        assert one.json()["price"] == "2.50"
        again = await products.client.get(
            f"/products/{row.id}", headers={"If-None-Match": one.headers["etag"]}
        )
        assert again.status_code == 304
