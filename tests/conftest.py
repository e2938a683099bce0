"""Fixtures shared by every tier.

Real servers are found through ``TEST_DATABASE_URL``, ``TEST_REDIS_URL`` and
``TEST_BROKER_URL`` (defaulting to the local servers). Without one, the tests that need it
skip with the reason; with ``CI=true`` they fail instead, so CI always exercises them.
"""

from __future__ import annotations

import asyncio
import gc
import io
import threading
import traceback
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_timeout

from support.servers import (
    TEST_BROKER_URL,
    TEST_DATABASE_URL,
    TEST_REDIS_URL,
    fresh_postgres_database,
    require_server,
)


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    """pytest-timeout's thread method, with every asyncio task's stack in the report: a
    hung async test sits in a coroutine, which no thread's stack shows (the loop's thread
    waits in the selector). The signal method is left to pytest-timeout."""
    if settings.method != "thread":
        return None
    timer = threading.Timer(settings.timeout, _timed_out, (item, settings))
    timer.name = f"pytest-timeout {item.nodeid}"
    timer.daemon = True

    def cancel() -> None:
        timer.cancel()
        timer.join()

    item.cancel_timeout = cancel  # type: ignore[attr-defined] # pytest-timeout's cancel hook
    timer.start()
    return True


def _timed_out(item: pytest.Item, settings: Any) -> None:
    capture = item.config.pluginmanager.getplugin("capturemanager")
    if capture is not None:  # the terminal is the real one again (captured output is kept)
        capture.suspend_global_capture(item)
    terminal = item.config.get_terminal_writer()
    terminal.sep("+", title="Timeout: asyncio tasks")
    terminal.write(asyncio_task_stacks())
    terminal.flush()
    pytest_timeout.timeout_timer(item, settings)  # captured output, threads, os._exit(1)


def asyncio_task_stacks() -> str:
    """The stack of every task of every event loop still open, as text: each task's chain
    of awaiting coroutines down to the innermost (``Task.print_stack`` shows only the
    outermost frame of a suspended task)."""
    out = io.StringIO()
    loops = [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, asyncio.AbstractEventLoop) and not obj.is_closed()
    ]
    for loop in loops:
        tasks = asyncio.all_tasks(loop)
        out.write(f"{loop!r}: {len(tasks)} task(s)\n")
        for task in tasks:
            out.write(f"{task!r}\n")
            out.writelines(traceback.format_list(_awaiting(task.get_coro())))
    if not loops:
        out.write("no event loop open\n")
    return out.getvalue()


def _awaiting(coro: Any) -> traceback.StackSummary:
    """The frames of ``coro`` and of what it awaits, outermost first."""
    frames = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            frames.append((frame, frame.f_lineno))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return traceback.StackSummary.extract(frames)


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
    with fresh_postgres_database(postgres_server_url) as url:
        yield url


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
