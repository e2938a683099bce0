"""One proxied ``GET /api/v1/products/{id}`` through the gateway app, in-process (raw ASGI),
to an upstream in another process, so that what is counted is the gateway's own cost: its
middleware, guards (token check, rate limit), HTTP client (aiohttp) and relay.

    PYTHONPATH=tests:. .venv/bin/python -m bench.profile.gateway_proxy -n 300 --cprofile
    bench/profile/instructions.sh gateway_proxy 300 [--redis] [--quiet] [--anonymous]

The upstream is ``bench._gateway_apps:product_upstream`` on uvicorn (the products service's
cached answer, headers included), a child process callgrind does not follow. The request
carries a valid bearer token (auth offload, then the per-user limit), as the front-door
scenario's does; ``--anonymous`` sends none (the per-address limit). The rate limit counts in
memory, as in the front-door scenario; ``--redis`` on Redis, as under ``mercato up`` with
``REDIS_URL``. ``--client-only`` drives the gateway's upstream session alone (one
``session.request`` and ``read`` a request, as the proxy calls it): the HTTP client's share.
Logging is as under ``mercato up`` (JSON at INFO, one access line a
request, to stderr); ``--quiet`` as the front-door scenario runs the gateway (``WARNING``, no
access log). ``--cprofile`` ends with the calls per request and the round trips per request
(upstream requests, Redis commands, socket writes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

from yarl import URL

from bench._servers import free_port
from bench.profile._driver import arguments, drive, http_scope, measure_calls
from mercato.gateway.app import create_app
from mercato.gateway.upstreams import build_upstreams, route_table
from mercato.platform.logging import configure_logging
from mercato.settings import Settings
from support.auth import bearer, issue_token, test_settings
from support.servers import TEST_REDIS_URL

PRODUCT_PATH = "/products/5f0c6f4e-7c1b-4f55-9b3e-2f2a1c0e9d11"

#: (label, how to recognise the function in cProfile's keys: file part, function name).
ROUND_TRIPS = (
    ("upstream requests", "aiohttp/client.py", "request"),
    ("Redis commands", "redis/asyncio/connection.py", "pack_command"),
    ("socket writes (asyncio transports)", "asyncio/selector_events.py", "write"),
)


def _flag(name: str) -> bool:
    if name in sys.argv:
        sys.argv.remove(name)
        return True
    return False


@contextlib.contextmanager
def upstream() -> Iterator[str]:
    """The product upstream on uvicorn (uvloop, httptools, as ``mercato serve``).

    Ready when uvicorn says so on its stderr: a blocking read costs the same few
    instructions however long it takes to start (polling it over HTTP would not, and that
    cost would land unevenly in the N and 2N runs)."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "--factory", "bench._gateway_apps:product_upstream"]
    command += ["--port", str(port), "--loop", "uvloop", "--http", "httptools"]
    command += ["--no-access-log", "--log-level", "info"]
    process = subprocess.Popen(
        command, env={**os.environ, "PYTHONPATH": "."}, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "Application startup complete" in line:
                break
        else:
            raise RuntimeError(f"the upstream exited with {process.wait()}")
        threading.Thread(target=process.stderr.read, daemon=True).start()  # never blocks it
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def per_request(profiler: cProfile.Profile, count: int) -> None:
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(calls for (_, calls, _, _, _) in entries.values())
    print(f"\n{total / count:.1f} Python function calls per request (cProfile)")
    for label, file_part, function in ROUND_TRIPS:
        calls = sum(
            value[1]
            for (file, _, name), value in entries.items()
            if name == function and file.endswith(file_part)
        )
        print(f"{calls / count:.2f} {label} per request")
    by_package: dict[str, int] = {}
    for (file, _, _), value in entries.items():
        by_package[_package(file)] = by_package.get(_package(file), 0) + value[1]
    print("calls per request by package:")
    for package, calls in sorted(by_package.items(), key=lambda item: -item[1]):
        print(f"  {calls / count:7.1f}  {package}")


def _package(file: str) -> str:
    """``aiohttp``, ``mercato.gateway``, ``asyncio``...: who a profiled function belongs to."""
    if file == "~":
        return "builtins"
    parts = file.split("/")
    for anchor in ("site-packages", "src"):
        if anchor in parts:
            rest = parts[parts.index(anchor) + 1 :]
            return ".".join(rest[:2]) if rest[0] == "mercato" else rest[0]
    stdlib = [index for index, part in enumerate(parts) if part.startswith("python3.")]
    if stdlib and stdlib[-1] + 1 < len(parts):
        return parts[stdlib[-1] + 1].removesuffix(".py")
    return parts[-1]


async def main() -> None:
    redis, quiet, anonymous = _flag("--redis"), _flag("--quiet"), _flag("--anonymous")
    client_only = _flag("--client-only")
    options = arguments(__doc__ or "")
    configure_logging(service="gateway", level="WARNING" if quiet else "INFO", fmt="json")
    with upstream() as base:
        settings = test_settings(
            gateway_routes={"products": [base]},
            rate_limit_api="100000000/minute",
            rate_limit_user="100000000/minute",
            redis_url=TEST_REDIS_URL if redis else None,
            rate_limit_prefix=f"profile-{uuid.uuid4().hex[:8]}",
            access_log=not quiet,
            storefront_enabled=False,
        )
        app = create_app(settings)
        token = {} if anonymous else bearer(issue_token())
        headers = [(k.lower().encode(), v.encode()) for k, v in token.items()]
        scope = http_scope("/api/v1" + PRODUCT_PATH, headers)
        if client_only:
            await _client_only(settings, options)
            return
        async with app.router.lifespan_context(app):
            await drive(app, scope, options.warmup)
            profiler = cProfile.Profile() if options.cprofile else None
            started = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            await drive(app, scope, options.requests)
            if profiler is not None:
                profiler.disable()
                stats = pstats.Stats(profiler, stream=sys.stdout)
                stats.sort_stats("cumulative").print_stats(60)
                stats.sort_stats("tottime").print_stats(40)
                stats.sort_stats("ncalls").print_stats(40)
                per_request(profiler, options.requests)
            elapsed = time.perf_counter() - started
            print(f"{options.requests} requests, {elapsed / options.requests * 1e6:.0f} us each")


async def _client_only(settings: Settings, options: argparse.Namespace) -> None:
    """An upstream session made as the gateway makes its own, without the gateway."""
    upstream = build_upstreams(route_table(settings), settings)["products"]
    url = URL(upstream.instances[0].url + PRODUCT_PATH, encoded=True)
    headers = [("Host", "127.0.0.1"), ("X-Request-ID", uuid.uuid4().hex)]

    async def one() -> None:
        async with upstream.session.request(
            "GET", url, headers=headers, allow_redirects=False
        ) as answer:
            if answer.status != 200:
                raise SystemExit(f"expected 200, got {answer.status}")
            await answer.read()

    try:
        await measure_calls(one, options)
    finally:
        await upstream.close()


if __name__ == "__main__":
    asyncio.run(main())
