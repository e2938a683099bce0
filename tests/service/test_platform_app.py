"""What every service gets from `create_service_app`: health, readiness, metrics, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from mercato.platform.app import create_service_app
from mercato.platform.settings import Settings, load_settings
from mercato.serving import app_factory

pytestmark = pytest.mark.anyio


def embedded_settings(**overrides: object) -> Settings:
    return load_settings(env_file=None, environment="testing", **overrides)


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan entered, and a client that talks to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture(params=["auth", "users", "products", "orders"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(app_factory(request.param)(embedded_settings())) as client:
        yield client


async def test_liveness_names_the_service(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_readiness_checks_database_and_cache(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")

    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "ready"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["cache"] == "ok"
    assert body["backends"]["database"] == "sqlite"
    assert body["backends"]["cache"] == "memory"


async def test_metrics_are_prometheus_text(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "http_requests_total{" in response.text
    assert 'route="/healthz"' in response.text


async def test_readiness_is_503_naming_what_failed_when_the_database_is_down() -> None:
    settings = embedded_settings(
        database_url="postgresql+asyncpg://postgres@127.0.0.1:9/nowhere", auto_migrate=False
    )
    app = create_service_app(settings, "orders", title="orders")

    async with serve(app) as client:
        response = await client.get("/readyz")

        assert response.status_code == 503
        assert response.json()["status"] == "unavailable"
        assert response.json()["checks"]["database"].startswith("unavailable")
        assert response.json()["checks"]["cache"] == "ok"
        assert "127.0.0.1" not in response.text


async def test_readiness_is_503_when_redis_is_down() -> None:
    app = create_service_app(
        embedded_settings(redis_url="redis://127.0.0.1:9/0"), "products", title="products"
    )

    async with serve(app) as client:
        response = await client.get("/readyz")

        assert response.status_code == 503
        assert response.json()["checks"]["cache"] != "ok"


async def test_docs_are_off_in_production() -> None:
    settings = load_settings(
        env_file=None,
        environment="production",
        secret_key="k" * 40,
        allowed_hosts="shop.example",
        database_url="sqlite+aiosqlite:///:memory:",
    )
    app = create_service_app(settings, "users", title="users")

    async with serve(app) as client:
        assert (await client.get("/docs")).status_code == 404
        assert (await client.get("/healthz")).status_code == 200
