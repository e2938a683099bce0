"""Every products row of API.md through the gateway of a real `mercato up`: on embedded
defaults (SQLite files, memory cache and broker), then on PostgreSQL, Redis and RabbitMQ.
Both run in development, which seeds the demo catalogue."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from redis import Redis

from support.processes import RunningMercato, mercato_up
from support.production import development_only
from support.servers import (
    TEST_BROKER_URL,
    TEST_DATABASE_URL,
    TEST_REDIS_URL,
    free_port,
    require_server,
)

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

ADMIN, ADMIN_PASSWORD = "catalogueadmin", "Cat4logueAdmin"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new PostgreSQL database on the test server, dropped afterwards."""
    parts = urlsplit(server_url.replace("+asyncpg", ""))
    name = f"mercato_e2e_{uuid.uuid4().hex[:12]}"
    admin_dsn = parts._replace(path="/postgres").geturl()

    async def run(sql: str) -> None:
        connection = await asyncpg.connect(admin_dsn)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield parts._replace(scheme="postgresql+asyncpg", path=f"/{name}").geturl()
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(
    scope="module",
    params=["embedded", pytest.param("servers", marks=pytest.mark.integration)],
)
def shop(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningMercato]:
    """`mercato up` on embedded defaults, then on PostgreSQL + Redis + RabbitMQ."""
    ports: set[int] = set()
    while len(ports) < 5:
        ports.add(free_port())
    names = ["gateway", "auth", "users", "products", "orders"]
    env = {"MERCATO_ADMIN_USERNAME": ADMIN, "MERCATO_ADMIN_PASSWORD": ADMIN_PASSWORD}
    with ExitStack() as stack:
        if request.param == "servers":
            database = stack.enter_context(
                fresh_database(require_server(TEST_DATABASE_URL, 5432, "PostgreSQL"))
            )
            redis = require_server(TEST_REDIS_URL, 6379, "Redis").rsplit("/", 1)[0] + "/10"
            env |= {
                "DATABASE_URL": database,
                "REDIS_URL": redis,
                "BROKER_URL": require_server(TEST_BROKER_URL, 5672, "RabbitMQ"),
                "MESSAGING_EXCHANGE": f"mercato.e2e.{uuid.uuid4().hex[:10]}",
            }
            client = Redis.from_url(redis)
            client.flushdb()  # a Redis database of this test's own: lists keyed by query
            client.close()
        running = stack.enter_context(
            mercato_up(
                tmp_path_factory.mktemp(f"products-e2e-{request.param}"),
                dict(zip(names, sorted(ports), strict=True)),
                env=env,
            )
        )
        yield running


@pytest.fixture(scope="module")
async def api(shop: RunningMercato) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{shop.base_url}/api/v1", timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
async def admin(api: httpx.AsyncClient) -> dict[str, str]:
    login = await api.post("/auth/login", json={"username": ADMIN, "password": ADMIN_PASSWORD})
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


@development_only
async def test_development_starts_with_the_demo_catalogue(api: httpx.AsyncClient) -> None:
    page = await api.get("/products", params={"limit": 100, "sort": "price"})
    assert page.status_code == 200
    body = page.json()
    assert body["total"] >= 120
    prices = [item["price"] for item in body["items"]]
    assert all(isinstance(price, str) for price in prices)
    assert [float(p) for p in prices] == sorted(float(p) for p in prices)
    kitchen = (await api.get("/products", params={"category": "kitchen"})).json()
    assert kitchen["total"] == 15
    assert {item["category"] for item in kitchen["items"]} == {"kitchen"}


async def test_admin_writes_and_public_reads_through_the_gateway(
    api: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    sku = f"E2E-{uuid.uuid4().hex[:8]}"
    body = {"sku": sku, "name": "Gateway Lamp", "price": "24.50", "stock": 3}
    assert (await api.post("/products", json=body)).status_code == 401
    created = await api.post("/products", json=body, headers=admin)
    assert created.status_code == 201, created.text
    product = created.json()
    assert (product["price"], product["category"], product["stock"]) == ("24.50", "general", 3)
    assert (await api.post("/products", json=body, headers=admin)).status_code == 409
    invalid = await api.post("/products", json={**body, "sku": "x", "price": "0"}, headers=admin)
    assert invalid.status_code == 422
    assert invalid.headers["content-type"] == "application/problem+json"

    url = f"/products/{product['id']}"
    first = await api.get(url)
    assert first.json() == product
    assert first.headers["cache-control"] == "public, max-age=60"
    etag = first.headers["etag"]
    not_modified = await api.get(url, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304
    assert not_modified.content == b""

    changed = await api.patch(url, json={"price": "19.99", "stock": 7}, headers=admin)
    assert changed.status_code == 200
    fresh = await api.get(url, headers={"If-None-Match": etag})
    assert fresh.status_code == 200
    assert (fresh.json()["price"], fresh.json()["stock"]) == ("19.99", 7)
    found = (await api.get("/products", params={"q": "gateway lamp"})).json()
    assert [item["sku"] for item in found["items"]] == [sku]

    assert (await api.delete(url, headers=admin)).status_code == 204
    assert (await api.get(url)).status_code == 404
    assert (await api.get("/products", params={"q": "gateway lamp"})).json()["total"] == 0


async def test_bad_list_parameters_are_422_through_the_gateway(api: httpx.AsyncClient) -> None:
    for params in ({"limit": 101}, {"sort": "stock"}, {"min_price": "' OR 1=1 --"}):
        response = await api.get("/products", params=params)
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
    literal = await api.get("/products", params={"q": "' OR '1'='1"})
    assert literal.json()["total"] == 0
