"""Apps the HTTP scenarios serve besides the real ones (``uvicorn --factory``).

- ``constant_app``: raw ASGI answering one pre-serialized product: the Python limit of the
  front door (scenario 2);
- ``product_upstream``: the same product with the headers the products service sends on a
  cached read (``ETag``, ``Cache-Control``, ``Last-Modified``, its ``X-Request-ID``): the
  upstream of ``bench/profile/gateway_proxy.py``, out of process, so a profile of the gateway
  counts the gateway alone;
- ``aiohttp_proxy`` / ``httpx_proxy``: the same minimal raw-ASGI reverse proxy on the two
  HTTP clients, to choose the gateway's client by measurement (``bench.http_clients``,
  docs/adr/0003); their upstream is ``BENCH_UPSTREAM`` (a base URL).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.types import Receive, Scope, Send

PRODUCT: dict[str, Any] = {
    "id": "5f0c6f4e-7c1b-4f55-9b3e-2f2a1c0e9d11",
    "sku": "LAMP-001",
    "name": "Desk lamp",
    "description": "A lamp for a desk.",
    "price": "19.99",
    "currency": "USD",
    "category": "lighting",
    "stock": 42,
    "created_at": "2026-11-30T10:00:00Z",
    "updated_at": "2026-11-30T10:00:00Z",
}
_BODY = json.dumps(PRODUCT).encode()
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())]


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _constant(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})


def constant_app() -> Any:
    return _constant


_PRODUCT_HEADERS = [
    *_HEADERS,
    (b"etag", b'"3f2a9c0e1b7d4c55"'),
    (b"cache-control", b"public, max-age=60"),
    (b"last-modified", b"Mon, 30 Nov 2026 10:00:00 GMT"),
]


async def _product(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    request_id = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"none")
    headers = [*_PRODUCT_HEADERS, (b"x-request-id", request_id)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _BODY})


def product_upstream() -> Any:
    return _product


_DROP = frozenset({b"host", b"connection", b"keep-alive", b"transfer-encoding", b"content-length"})


def aiohttp_proxy() -> Any:
    import aiohttp

    upstream = os.environ["BENCH_UPSTREAM"]
    state: dict[str, aiohttp.ClientSession] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            state["session"] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100), auto_decompress=False
            )
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            await state["session"].close()
            await send({"type": "lifespan.shutdown.complete"})
            del message
            return
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k not in _DROP]
        path = scope["raw_path"].decode()[len("/api/v1") :]
        async with state["session"].request(
            scope["method"], upstream + path, headers=headers
        ) as response:
            body = await response.read()
            out = [(k.lower(), v) for k, v in response.raw_headers if k.lower() not in _DROP]
            await send({"type": "http.response.start", "status": response.status, "headers": out})
            await send({"type": "http.response.body", "body": body})

    return app


def httpx_proxy() -> Any:
    import httpx

    upstream = os.environ["BENCH_UPSTREAM"]

    @asynccontextmanager
    async def client() -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=100)
        ) as http:
            yield http

    state: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            state["cm"] = client()
            state["http"] = await state["cm"].__aenter__()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await state["cm"].__aexit__(None, None, None)
            await send({"type": "lifespan.shutdown.complete"})
            return
        http: httpx.AsyncClient = state["http"]
        headers = [(k, v) for k, v in scope["headers"] if k not in _DROP]
        path = scope["raw_path"].decode()[len("/api/v1") :]
        response = await http.request(scope["method"], upstream + path, headers=headers)
        out = [
            (k.lower(), v)
            for k, v in response.headers.raw
            if k.lower() not in _DROP and k.lower() != b"content-encoding"
        ]
        await send({"type": "http.response.start", "status": response.status_code, "headers": out})
        await send({"type": "http.response.body", "body": response.content})

    return app
