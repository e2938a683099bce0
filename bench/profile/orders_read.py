"""Authenticated ``GET /orders/{id}`` on the orders service, in-process, on PostgreSQL.

    PYTHONPATH=tests .venv/bin/python -m bench.profile.orders_read -n 200 --cprofile 2>/dev/null
    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p \\
        .venv/bin/python -m bench.profile.orders_read -n 200 2>/dev/null   # and -n 400

Logging is as under ``mercato up`` (JSON at INFO, one access line a request), to stderr.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import httpx

from bench.profile._driver import arguments, http_scope, measure
from mercato.orders.app import create_app
from mercato.platform.logging import configure_logging
from support.auth import auth_headers
from support.orders import orders_settings, products_stub
from support.servers import TEST_DATABASE_URL, fresh_postgres_database


async def main() -> None:
    options = arguments(__doc__ or "")
    configure_logging(service="orders", level="INFO", fmt="json")
    headers = auth_headers("alice")
    with tempfile.TemporaryDirectory() as tmp, fresh_postgres_database(TEST_DATABASE_URL) as url:
        async with products_stub() as products:
            settings = orders_settings(Path(tmp), products.url, orders_database_url=url)
            app = create_app(settings)
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app), base_url="http://test"
                ) as client,
            ):
                body = {"items": [{"product_id": products.add(), "quantity": 2}]}
                placed = await client.post("/orders", json=body, headers=headers)
                assert placed.status_code == 201, placed.text
                order_id = placed.json()["id"]
                scope = http_scope(
                    f"/orders/{order_id}",
                    [(b"authorization", headers["Authorization"].encode())],
                )
                await measure(app, scope, options)


if __name__ == "__main__":
    asyncio.run(main())
