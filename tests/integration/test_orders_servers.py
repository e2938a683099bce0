"""The saga on the servers topology: PostgreSQL, Redis and RabbitMQ (a private exchange on
the shared broker), with the real products service."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from support.auth import auth_headers, test_settings
from support.messaging import drain
from support.messaging_apps import delete_rabbit_topology
from support.orders import shop_in_process

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
async def exchange(broker_server_url: str) -> AsyncIterator[str]:
    name = f"test-orders-{uuid.uuid4().hex[:8]}"
    yield name
    settings = test_settings(broker_url=broker_server_url, messaging_exchange=name)
    await delete_rabbit_topology(settings, ["orders", "products", "notifications"])


async def test_the_stock_race_and_a_cancellation_on_the_real_servers(
    tmp_path: Path,
    postgres_url: str,
    redis_url: str,
    redis_prefix: str,
    broker_server_url: str,
    exchange: str,
) -> None:
    servers = {
        "redis_url": redis_url,
        "broker_url": broker_server_url,
        "messaging_exchange": exchange,
        "rate_limit_prefix": redis_prefix,
    }
    async with shop_in_process(
        tmp_path,
        products_settings={**servers, "products_database_url": postgres_url},
        orders_database_url=postgres_url,
        **servers,
    ) as shop:
        product_id = await shop.create_product(stock=5)
        body = {"items": [{"product_id": product_id, "quantity": 1}]}
        answers = await asyncio.gather(
            *(
                shop.orders.client.post(
                    "/orders",
                    json=body,
                    headers={**auth_headers(f"user-{i}"), "Idempotency-Key": f"k-{i}"},
                )
                for i in range(20)
            )
        )
        assert [a.status_code for a in answers] == [201] * 20
        await drain(shop.orders.app, shop.products_app, within=30)
        statuses = {
            a.json()["id"]: await shop.orders.status_of(
                a.json()["id"], auth_headers(a.json()["user_id"])
            )
            for a in answers
        }
        assert Counter(statuses.values()) == {"confirmed": 5, "rejected": 15}
        assert await shop.stock_of(product_id) == 0

        confirmed = next(oid for oid, status in statuses.items() if status == "confirmed")
        owner = next(a.json()["user_id"] for a in answers if a.json()["id"] == confirmed)
        cancel = await shop.orders.client.post(
            f"/orders/{confirmed}/cancel", headers=auth_headers(owner)
        )
        assert cancel.status_code == 200
        await drain(shop.orders.app, shop.products_app, within=30)
        assert await shop.stock_of(product_id) == 1
