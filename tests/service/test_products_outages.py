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
