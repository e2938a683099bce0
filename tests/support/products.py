"""Helpers for tests of the products service: the app in-process, products, events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from mercato.messaging import Outbox
from mercato.messaging.tables import outbox
from mercato.orders.contracts import OrderCancelled, OrderLine, OrderPlaced
from mercato.platform.app import ServiceContext
from mercato.products.app import create_app
from mercato.products.caching import CatalogueCache
from mercato.products.models import ProductRow
from mercato.products.service import release_stock, reserve_stock
from mercato.settings import Settings
from support.auth import admin_headers, test_settings


@dataclass
class RunningProducts:
    app: FastAPI
    client: httpx.AsyncClient
    admin: dict[str, str]

    @property
    def context(self) -> ServiceContext:
        context: ServiceContext = self.app.state.context
        return context

    @property
    def catalogue(self) -> CatalogueCache:
        catalogue: CatalogueCache = self.app.state.catalogue
        return catalogue

    @property
    def outbox(self) -> Outbox:
        outbox: Outbox = self.app.state.outbox
        return outbox

    async def create(self, **fields: Any) -> dict[str, Any]:
        """Create a product as admin (defaults for what is not given); return its JSON."""
        body = {"sku": f"SKU-{fields.get('name', 'x')}", "name": "Thing", "price": "9.99"}
        body.update(fields)
        response = await self.client.post("/products", json=body, headers=self.admin)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """The envelopes this service published (its outbox), oldest first."""
        statement = select(outbox.c.event_type, outbox.c.payload).order_by(outbox.c.seq)
        async with self.context.db.unit_of_work(read_only=True) as uow:
            rows = (await uow.session.execute(statement)).all()
        return [
            json.loads(row.payload)
            for row in rows
            if event_type is None or row.event_type == event_type
        ]


@asynccontextmanager
async def running_products(
    settings: Settings | None = None, **overrides: Any
) -> AsyncIterator[RunningProducts]:
    """The products app with its lifespan entered, and a client talking to it in-process."""
    app = create_app(settings or test_settings(**overrides))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client,
    ):
        yield RunningProducts(app, client, admin_headers())


def order_placed(order_id: str, *lines: tuple[str, int]) -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id,
        user_id="user-1",
        items=[
            OrderLine(product_id=product_id, quantity=quantity) for product_id, quantity in lines
        ],
        total=Decimal("1.00"),
        currency="USD",
    )


def order_cancelled(order_id: str, *lines: tuple[str, int]) -> OrderCancelled:
    return OrderCancelled(
        order_id=order_id,
        user_id="user-1",
        items=[
            OrderLine(product_id=product_id, quantity=quantity) for product_id, quantity in lines
        ],
    )


async def reserve(products: RunningProducts, order: OrderPlaced) -> bool | None:
    """Run the ``order.placed`` handler in its own transaction, as the consumer does."""
    async with products.context.db.unit_of_work() as uow:
        outcome = await reserve_stock(uow, products.outbox, products.catalogue, order)
        await uow.commit()
    return outcome


async def release(products: RunningProducts, order: OrderCancelled) -> bool:
    async with products.context.db.unit_of_work() as uow:
        outcome = await release_stock(uow, products.outbox, products.catalogue, order)
        await uow.commit()
    return outcome


async def stock_of(products: RunningProducts, product_id: str) -> int:
    async with products.context.db.unit_of_work(read_only=True) as uow:
        stock = (
            await uow.session.execute(select(ProductRow.stock).where(ProductRow.id == product_id))
        ).scalar_one()
    return int(stock)


async def race_for_stock(products: RunningProducts, *, orders: int = 25) -> None:
    """``orders`` concurrent two-line orders race for 3 units of one product and 5 of
    another: exactly 3 are reserved, all-or-nothing, and no stock goes below zero; then
    every order is cancelled twice at once, and exactly the reserved stock comes back."""
    scarce = await products.create(sku="SCARCE", name="Scarce", stock=3)
    plenty = await products.create(sku="PLENTY", name="Plenty", stock=5)
    placed = [
        order_placed(f"race-{n}", (plenty["id"], 1), (scarce["id"], 1)) for n in range(orders)
    ]
    outcomes = await asyncio.gather(*(reserve(products, order) for order in placed))
    assert outcomes.count(True) == 3
    assert outcomes.count(False) == orders - 3
    assert await stock_of(products, scarce["id"]) == 0
    assert await stock_of(products, plenty["id"]) == 2  # the rejected took nothing
    reserved = await products.events("stock.reserved")
    rejected = await products.events("stock.rejected")
    assert len(reserved) == 3
    assert len(rejected) == orders - 3
    assert {event["data"]["order_id"] for event in reserved + rejected} == {
        order.order_id for order in placed
    }
    shown = await products.client.get(f"/products/{scarce['id']}")
    assert shown.json()["stock"] == 0

    # Every cancellation delivered twice, all at once: each reservation is released once.
    cancels = [
        order_cancelled(event["data"]["order_id"], (plenty["id"], 1), (scarce["id"], 1))
        for event in reserved + rejected
    ]
    released = await asyncio.gather(*(release(products, c) for c in cancels + cancels))
    assert released.count(True) == 3
    assert await stock_of(products, scarce["id"]) == 3
    assert await stock_of(products, plenty["id"]) == 5
    assert len(await products.events("stock.released")) == 3
