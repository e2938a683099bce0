"""Fixtures shared by every tier.

Real servers are found through ``TEST_DATABASE_URL``, ``TEST_REDIS_URL`` and
``TEST_BROKER_URL`` (defaulting to the local servers). Without one, the tests that need it
skip with the reason; with ``CI=true`` they fail instead, so CI always exercises them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

from support.servers import (
    TEST_BROKER_URL,
    TEST_DATABASE_URL,
    TEST_REDIS_URL,
    require_server,
)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The URL of the shared PostgreSQL server's test database."""
    return require_server(TEST_DATABASE_URL, 5432, "PostgreSQL")


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import asyncpg

    parts = urlsplit(postgres_server_url.replace("+asyncpg", ""))
    name = f"mercato_test_{uuid.uuid4().hex[:12]}"
    admin_dsn = parts._replace(path="/postgres").geturl()

    async def execute(sql: str) -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def run(sql: str) -> None:
        # In a thread of its own, so that async tests (whose loop is running) can use it too.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, execute(sql)).result()

    run(f'CREATE DATABASE "{name}"')
    try:
        yield parts._replace(scheme="postgresql+asyncpg", path=f"/{name}").geturl()
    finally:
        run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_server_url() -> str:
    return require_server(TEST_REDIS_URL, 6379, "Redis")


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """The shared Redis server; keys are isolated by a per-test namespace, see ``redis_prefix``."""
    return redis_server_url


@pytest.fixture
def redis_prefix() -> str:
    """A key namespace unique to one test, so tests sharing Redis never see each other's keys."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def broker_server_url() -> str:
    return require_server(TEST_BROKER_URL, 5672, "RabbitMQ")
