"""A cached ``GET /products/{id}`` on the products service, in-process, from Redis (the
default) or the memory cache (``--memory``).

    PYTHONPATH=tests:. .venv/bin/python -m bench.profile.products_read -n 300 --cprofile 2>/dev/null
    bench/profile/instructions.sh products_read 200

SQLite in a temporary directory holds the product: after the first read every request is
answered from the cache. Logging is as under ``mercato up`` (JSON at INFO), to stderr.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import httpx

from bench.profile._driver import arguments, http_scope, measure
from mercato.platform.logging import configure_logging
from mercato.products.app import create_app
from support.auth import admin_headers, test_settings
from support.servers import TEST_REDIS_URL


async def main() -> None:
    memory = "--memory" in sys.argv
    if memory:
        sys.argv.remove("--memory")
    options = arguments(__doc__ or "")
    configure_logging(service="products", level="INFO", fmt="json")
    with tempfile.TemporaryDirectory() as tmp:
        settings = test_settings(
            products_database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'products.db'}",
            data_dir=Path(tmp),
            products_cache_enabled=True,
            redis_url=None if memory else TEST_REDIS_URL,
        )
        app = create_app(settings)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client,
        ):
            created = await client.post(
                "/products",
                json={"sku": "PROFILE-1", "name": "Profiled", "price": "9.99", "stock": 5},
                headers=admin_headers(),
            )
            assert created.status_code == 201, created.text
            scope = http_scope(f"/products/{created.json()['id']}", [])
            await measure(app, scope, options)


if __name__ == "__main__":
    asyncio.run(main())
