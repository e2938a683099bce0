"""Where the real servers are, and how a test asks for one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import ThreadingHTTPServer
from typing import NoReturn, Protocol, TypeVar
from urllib.parse import urlsplit

import pytest

TEST_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_BROKER_URL = os.environ.get("TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        address = (parts.hostname or "127.0.0.1", parts.port or default_port)
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


def require_server(url: str, default_port: int, what: str) -> str:
    """Return ``url`` if its server answers; skip (or fail under CI) otherwise."""
    if not _answers(url, default_port):
        missing(f"{what} is not answering at {urlsplit(url).netloc}")
    return url


def missing(reason: str) -> NoReturn:
    """Skip the test for want of ``reason``'s server or tool, or fail it under CI, where
    every real-server and fault test must run."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: real-server tests must run)")
    pytest.skip(reason)


def free_port(*, avoid: int | None = None) -> int:
    """A port nobody listens on now; never ``avoid`` (a shared server's port, which is free
    only while that server is down and must stay its own)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != avoid:
            return port


class PrivateServer(Protocol):
    """A server a fault test starts for itself (its own port and directory), to kill."""

    def start(self) -> None: ...

    def cleanup(self) -> None: ...


ServerT = TypeVar("ServerT", bound=PrivateServer)


@contextlib.contextmanager
def started(node: ServerT) -> Iterator[ServerT]:
    """``node`` started for the block, then stopped and its directory removed (also when
    it failed to start)."""
    try:
        node.start()
        yield node
    finally:
        node.cleanup()


@contextlib.contextmanager
def fresh_postgres_database(server_url: str, *, prefix: str = "mercato_test") -> Iterator[str]:
    """A new, empty database on the PostgreSQL server of ``server_url`` (its
    ``postgresql+asyncpg`` URL), dropped (forcibly) afterwards."""
    import asyncpg

    parts = urlsplit(server_url.replace("+asyncpg", ""))
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin_dsn = parts._replace(path="/postgres").geturl()

    async def execute(sql: str) -> None:
        # Bounded, so that a server that stops answering fails the test instead of hanging it.
        connection = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            await connection.execute(sql, timeout=60)
        finally:
            await connection.close(timeout=10)

    def run(sql: str) -> None:
        # In a thread of its own, so that async tests (whose loop is running) can use it too.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, execute(sql)).result()

    run(f'CREATE DATABASE "{name}"')
    try:
        yield parts._replace(scheme="postgresql+asyncpg", path=f"/{name}").geturl()
    finally:
        run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def serving_in_thread(server: ThreadingHTTPServer) -> Iterator[ThreadingHTTPServer]:
    """``server`` answering from a daemon thread until the block ends, then closed."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
