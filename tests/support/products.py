"""Helpers for tests of the products service: the app in-process, products, events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from mercato.messaging.tables import outbox
from mercato.platform.app import ServiceContext
from mercato.platform.settings import Settings
from mercato.products.app import create_app
from mercato.products.caching import CatalogueCache
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
