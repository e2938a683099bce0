"""The operator's way out for an order stranded by a dead-lettered ``order.placed`` (issue
17, README "Database and cache outages"): once the cause is gone, `mercato events dlq
replay` sends the event again, products reserves the stock and the order settles."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mercato.cli import app as cli
from mercato.orders.contracts import OrderPlaced
from mercato.platform.db import UnitOfWork
from mercato.products import service as products_service
from mercato.products.caching import CatalogueCache
from support.auth import auth_headers
from support.messaging_apps import dead_letter_count
from support.orders import shop_in_process
from support.waiting import eventually

pytestmark = pytest.mark.anyio


async def test_replaying_a_dead_lettered_order_placed_settles_the_stranded_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    messaging = {
        "messaging_max_attempts": 2,
        "messaging_retry_backoff": 0.01,
        "messaging_retry_backoff_max": 0.02,
        "outbox_poll_interval": 0.05,
    }
    products_url = f"sqlite+aiosqlite:///{tmp_path / 'products' / 'products.db'}"

    async def broken(uow: UnitOfWork, cache: CatalogueCache, order: OrderPlaced) -> bool | None:
        raise RuntimeError("products cannot reserve stock (the cause an operator must fix)")

    async with shop_in_process(tmp_path, products_settings=messaging, **messaging) as shop:
        product_id = await shop.create_product(stock=5)
        user = auth_headers("replay-user")
        with monkeypatch.context() as patch:
            patch.setattr(products_service, "reserve_stock", broken)
            placed = await shop.orders.client.post(
                "/orders", json={"items": [{"product_id": product_id, "quantity": 2}]}, headers=user
            )
            assert placed.status_code == 201, placed.text
            order_id = placed.json()["id"]
            products_db = shop.products_app.state.context.db

            async def dead_lettered() -> bool:
                return await dead_letter_count(products_db) == 1

            await eventually(dead_lettered)
        assert await shop.orders.status_of(order_id, user) == "pending"  # stranded
        assert await shop.stock_of(product_id) == 5

        env = {"ENVIRONMENT": "testing", "PRODUCTS_DATABASE_URL": products_url}
        runner = CliRunner()
        listed = await asyncio.to_thread(
            runner.invoke, cli, ["events", "dlq", "list", "--service", "products"], env=env
        )
        assert listed.exit_code == 0, listed.output
        assert "order.placed" in listed.output
        assert "1 dead letter(s)" in listed.output
        replayed = await asyncio.to_thread(
            runner.invoke,
            cli,
            ["events", "dlq", "replay", "--service", "products", "--all"],
            env=env,
        )
        assert replayed.exit_code == 0, replayed.output
        assert "replayed 1 dead letter(s)" in replayed.output

        async def confirmed() -> bool:
            return await shop.orders.status_of(order_id, user) == "confirmed"

        await eventually(confirmed)
        assert await shop.stock_of(product_id) == 3
        again = await asyncio.to_thread(
            runner.invoke,
            cli,
            ["events", "dlq", "replay", "--service", "products", "--all"],
            env=env,
        )
        assert "replayed 0 dead letter(s)" in again.output  # a replay is sent once
