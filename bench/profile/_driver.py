"""A raw ASGI driver: calls an app N times with one fixed request, no client library in
between, so that what a profiler counts is the app's own cost per request."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Asgi = Callable[[Scope, Any, Any], Awaitable[None]]


def http_scope(path: str, headers: list[tuple[bytes, bytes]], method: str = "GET") -> Scope:
    raw_path, _, query = path.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 18000),
        "state": {},
    }


async def call(app: Asgi, scope: Scope) -> tuple[int, bytes]:
    """One request through ``app``: its status and body."""
    sent = False
    status = 0
    body = bytearray()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # never: a real server sends disconnect only on hang-up
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(dict(scope, state={}), receive, send)
    return status, bytes(body)


async def drive(app: Asgi, scope: Scope, count: int, expect: int = 200) -> None:
    for _ in range(count):
        status, body = await call(app, scope)
        if status != expect:
            raise SystemExit(f"expected {expect}, got {status}: {body[:300]!r}")


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-n", "--requests", type=int, default=200, help="measured requests")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--cprofile", action="store_true", help="print the top of cProfile")
    return parser.parse_args()


async def measure(app: Asgi, scope: Scope, options: argparse.Namespace) -> None:
    """Warm up, then drive ``options.requests`` requests (under cProfile when asked).

    Under callgrind run it twice, with N and 2N requests: the difference of the two totals
    divided by N is the instruction count per request, start-up cancelled out."""

    async def one() -> None:
        await drive(app, scope, 1)

    await measure_calls(one, options)


async def measure_calls(
    call_once: Callable[[], Awaitable[None]], options: argparse.Namespace
) -> None:
    """:func:`measure` for any awaitable operation: ``call_once`` is one request."""
    for _ in range(options.warmup):
        await call_once()
    profiler = cProfile.Profile() if options.cprofile else None
    started = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    for _ in range(options.requests):
        await call_once()
    if profiler is not None:
        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("cumulative").print_stats(45)
        stats.sort_stats("tottime").print_stats(30)
    elapsed = time.perf_counter() - started
    print(f"{options.requests} requests, {elapsed / options.requests * 1e6:.0f} us each (wall)")
