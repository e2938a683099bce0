"""Fixtures shared by every tier.

Real servers are found through ``TEST_DATABASE_URL``, ``TEST_REDIS_URL`` and
``TEST_BROKER_URL`` (defaulting to the local servers). Without one, the tests that need it
skip with the reason; with ``CI=true`` they fail instead, so CI always exercises them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import pytest

TEST_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_BROKER_URL = os.environ.get("TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), 1):
            return True
    except OSError:
        return False


def require_server(url: str, default_port: int, what: str) -> str:
    """Return ``url`` if its server answers; skip (or fail under CI) otherwise."""
    if _answers(url, default_port):
        return url
    message = f"{what} is not answering at {urlsplit(url).netloc}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: real-server tests must run)")
    pytest.skip(message)


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

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield parts._replace(scheme="postgresql+asyncpg", path=f"/{name}").geturl()
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def redis_server_url() -> str:
    return require_server(TEST_REDIS_URL, 6379, "Redis")


@pytest.fixture
async def redis_url(redis_server_url: str) -> AsyncIterator[str]:
    """The shared Redis server; keys are isolated by a per-test namespace, see ``redis_prefix``."""
    yield redis_server_url


@pytest.fixture
def redis_prefix() -> str:
    """A key namespace unique to one test, so tests sharing Redis never see each other's keys."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def broker_server_url() -> str:
    return require_server(TEST_BROKER_URL, 5672, "RabbitMQ")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
