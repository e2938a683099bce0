"""What every service gets from `create_service_app`: health, readiness, metrics, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from structlog.testing import capture_logs

from mercato.platform.app import create_service_app
from mercato.platform.cache import MemoryCache
from mercato.platform.db import Database
from mercato.serving import app_factory, migrate
from mercato.settings import ServiceName, Settings, load_settings
from support.waiting import eventually

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


@pytest.mark.parametrize("service", ["auth", "users", "products", "orders"])
async def test_readiness_is_503_naming_the_service_until_its_schema_is_migrated(
    service: ServiceName, tmp_path: Path
) -> None:
    settings = embedded_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", auto_migrate=False
    )
    app = app_factory(service)(settings)
    answers: list[httpx.Response] = []

    async def probes_answered(client: httpx.AsyncClient) -> bool:
        # A background loop failing on the missing tables can hold the loop for a moment.
        answers.append(await client.get("/readyz"))
        return "timeout" not in answers[-1].json()["checks"].values()

    async with serve(app) as client:
        await eventually(lambda: probes_answered(client))
        behind = answers[-1]
        await migrate(settings, [service])
        await eventually(lambda: probes_answered(client))
        migrated = answers[-1]

    assert behind.status_code == 503
    assert behind.json()["service"] == service
    schema = behind.json()["checks"]["schema"]
    assert f"the {service} schema is behind its migrations" in schema
    assert "mercato migrate" in schema
    assert behind.json()["checks"]["database"] == "ok"
    assert migrated.status_code == 200
    assert migrated.json()["checks"]["schema"] == "ok"


async def test_a_schema_written_by_newer_code_is_not_behind(tmp_path: Path) -> None:
    """A rolling upgrade: newer code migrated the shared database past what this code knows."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    settings = embedded_settings(database_url=url, auto_migrate=False)
    await migrate(settings, ["users"])
    database = Database(url)
    async with database.engine.begin() as connection:
        await connection.execute(text("UPDATE alembic_version SET version_num = 'from-the-future'"))
    await database.dispose()

    async with serve(app_factory("users")(settings)) as client:
        response = await client.get("/readyz")

    assert response.json()["checks"]["schema"] == "ok"


@pytest.mark.parametrize("service", ["auth", "users", "products", "orders"])
async def test_metrics_answer_only_the_allowed_networks(service: ServiceName) -> None:
    app = app_factory(service)(embedded_settings())
    async with app.router.lifespan_context(app):
        answers = {}
        for address in ("127.0.0.1", "10.9.8.7", "203.0.113.9"):
            transport = httpx.ASGITransport(app=app, client=(address, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                answers[address] = await client.get(
                    "/metrics", headers={"X-Forwarded-For": "127.0.0.1"}
                )

    assert {address: r.status_code for address, r in answers.items()} == {
        "127.0.0.1": 200,
        "10.9.8.7": 200,
        "203.0.113.9": 404,
    }
    assert answers["203.0.113.9"].headers["content-type"] == "application/problem+json"
    assert "http_requests_total" not in answers["203.0.113.9"].text


async def test_headers_past_the_limit_are_431_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Padding": "a" * 17_000})

    assert response.status_code == 431
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["request_id"] == response.headers["x-request-id"]


async def test_a_close_that_hangs_does_not_hold_up_the_shutdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`mercato serve` has no outer deadline: the service's own lifespan must end even when
    a backend's close never returns, and say what it gave up on."""

    async def hangs(self: MemoryCache) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(MemoryCache, "close", hangs)
    app = app_factory("users")(embedded_settings(graceful_timeout=0.2))
    stopped = asyncio.Event()

    async def run() -> None:
        async with app.router.lifespan_context(app):
            pass
        stopped.set()

    with capture_logs() as logs:
        task = asyncio.create_task(run())
        await eventually(stopped.is_set, within=10.0)
        await task
    assert any("closing the users cache" in str(line.values()) for line in logs), logs
