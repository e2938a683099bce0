"""Where the real servers are, and how a test asks for one."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
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
