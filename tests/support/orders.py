"""Helpers for the orders tests: a stand-in products service on a real local port, and an
orders app wired to it.

    async with products_stub() as products:
        products.add("p1", price="19.99")
        async with orders_client(tmp_path, products.url) as harness:
            await harness.client.post("/orders", json=..., headers=auth_headers("u1"))
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from fastapi import FastAPI
from sqlalchemy import func, select

from mercato.messaging import Broker, SharedMessaging, in_process_broker
from mercato.orders.app import create_app
from mercato.orders.models import IdempotencyKeyRow, OrderRow
from mercato.platform.db import Database
from mercato.settings import Settings
from support.auth import test_settings
from support.servers import free_port


@dataclass
class ProductsStub:
    """``GET /products?ids=`` from a dict, as the products service answers it: a page of
    exactly those products, all of them unless ``limit`` says fewer; 422 without ids or
    with more than 100. ``failing_with`` (a status) makes every request fail."""

    port: int
    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: int = 0
    #: The ids each request asked for, in order.
    asked: list[list[str]] = field(default_factory=list)
    delay: float = 0.0
    failing_with: int | None = None
    runner: web.AppRunner | None = None
    requested: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(
        self,
        product_id: str | None = None,
        *,
        price: str = "10.00",
        name: str | None = None,
        currency: str = "USD",
        stock: int = 100,
    ) -> str:
        pid = product_id or str(uuid.uuid4())
        self.products[pid] = {
            "id": pid,
            "sku": f"SKU-{pid[:8]}",
            "name": name or f"Product {pid[:8]}",
            "description": "",
            "price": price,
            "currency": currency,
            "category": "general",
            "stock": stock,
            "created_at": "2026-11-30T10:00:00Z",
            "updated_at": "2026-11-30T10:00:00Z",
        }
        return pid

    async def start(self) -> None:
        async def listing(request: web.Request) -> web.Response:
            self.requests += 1
            self.requested.set()
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.failing_with is not None:
                return web.json_response({"status": self.failing_with}, status=self.failing_with)
            ids = request.query.get("ids", "").split(",")
            self.asked.append(ids)
            if not all(ids) or len(ids) > 100:
                return web.json_response({"status": 422, "title": "Unprocessable"}, status=422)
            found = [self.products[pid] for pid in sorted(set(ids)) if pid in self.products]
            limit = int(request.query.get("limit", len(set(ids))))
            return web.json_response(
                {"items": found[:limit], "total": len(found), "limit": limit, "offset": 0}
            )

        app = web.Application()
        app.router.add_get("/products", listing)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@asynccontextmanager
async def products_stub() -> AsyncIterator[ProductsStub]:
    stub = ProductsStub(port=free_port())
    await stub.start()
    try:
        yield stub
    finally:
        await stub.stop()


def orders_settings(tmp_path: Path, products_url: str, **overrides: Any) -> Settings:
    """Testing settings: a SQLite file (so concurrent requests get real transactions), the
    stub as products, fast retries, and ``.eml`` files under ``tmp_path``."""
    values: dict[str, Any] = {
        "orders_database_url": f"sqlite+aiosqlite:///{tmp_path / 'orders.db'}",
        "products_url": products_url,
        "data_dir": tmp_path,
        "service_call_retries": 1,
        "service_call_backoff": 0.001,
        "service_call_backoff_max": 0.002,
        "service_call_timeout": 2.0,
        **overrides,
    }
    return test_settings(**values)


@dataclass
class OrdersHarness:
    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings

    @property
    def database(self) -> Database:
        database: Database = self.app.state.context.db
        return database

    async def count(self, what: Any) -> int:
        async with self.database.unit_of_work(read_only=True) as uow:
            return int(
                (await uow.session.execute(select(func.count()).select_from(what))).scalar_one()
            )

    async def orders(self) -> int:
        return await self.count(OrderRow)

    async def keys(self) -> int:
        return await self.count(IdempotencyKeyRow)

    async def outbox(self, event_type: str | None = None) -> int:
        from mercato.messaging.tables import outbox

        query = select(func.count()).select_from(outbox)
        if event_type:
            query = query.where(outbox.c.event_type == event_type)
        async with self.database.unit_of_work(read_only=True) as uow:
            return int((await uow.session.execute(query)).scalar_one())

    async def status_of(self, order_id: str, headers: dict[str, str]) -> str:
        response = await self.client.get(f"/orders/{order_id}", headers=headers)
        assert response.status_code == 200, response.text
        return str(response.json()["status"])


@asynccontextmanager
async def orders_client(
    tmp_path: Path, products_url: str, *, broker: Broker | None = None, **overrides: Any
) -> AsyncIterator[OrdersHarness]:
    """The orders app in-process; ``broker`` is the one it shares with other apps of the
    test (memory), else it has its own."""
    settings = orders_settings(tmp_path, products_url, **overrides)
    app = create_app(settings, shared=SharedMessaging(broker=broker))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client,
    ):
        yield OrdersHarness(app, client, settings)


@dataclass
class Shop:
    """The orders app in-process and the real products app on a real port, sharing one
    broker (the in-process memory broker unless ``broker_url`` is set)."""

    orders: OrdersHarness
    products_app: FastAPI
    products: httpx.AsyncClient  # talks to the products app over HTTP

    async def create_product(self, *, stock: int, price: str = "9.99") -> str:
        from support.auth import admin_headers

        sku = f"SKU-{uuid.uuid4().hex[:10]}"
        response = await self.products.post(
            "/products",
            json={"sku": sku, "name": f"Item {sku}", "price": price, "stock": stock},
            headers=admin_headers(),
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def stock_of(self, product_id: str) -> int:
        response = await self.products.get(f"/products/{product_id}")
        assert response.status_code == 200, response.text
        return int(response.json()["stock"])


@asynccontextmanager
async def shop_in_process(
    tmp_path: Path,
    *,
    products_settings: dict[str, Any] | None = None,
    **orders_overrides: Any,
) -> AsyncIterator[Shop]:
    from mercato.products.app import create_app as create_products_app
    from support.standin import serve

    products_dir = tmp_path / "products"
    products_dir.mkdir(exist_ok=True)
    products_values: dict[str, Any] = {
        "products_database_url": f"sqlite+aiosqlite:///{products_dir / 'products.db'}",
        "data_dir": products_dir,
        **(products_settings or {}),
    }
    settings = test_settings(**products_values)
    broker = in_process_broker(settings)  # memory: the two apps share it, as under `up`
    products_app = create_products_app(settings, shared=SharedMessaging(broker=broker))
    async with (
        serve(products_app) as server,
        httpx.AsyncClient(base_url=server.url, timeout=30) as products,
        orders_client(tmp_path, server.url, broker=broker, **orders_overrides) as orders,
    ):
        yield Shop(orders, products_app, products)
