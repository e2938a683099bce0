"""Stand-in upstream services for gateway tests, served by uvicorn on free ports.

A :class:`StandIn` records every request it receives (so a test can prove a refused request
never reached it) and answers a few paths under any service prefix::

    /<svc>/echo...        200 JSON of what it received (method, path, query, headers, body)
    /<svc>/slow?seconds=  sleeps, then 200
    /<svc>/status/<code>  answers that status
    /<svc>/big?size=      a body of ``size`` bytes, streamed in chunks
    /readyz               200 (or ``ready = False`` -> 503)
    /openapi.json         ``openapi`` (a test sets it)

``async with serve(app) as url:`` runs an ASGI app on a free port until the block ends;
:class:`Server` can be stopped and started again on the same port (a dead, then healed,
upstream). :func:`closing_server` accepts connections and drops them without answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send

from support.servers import free_port


@dataclass
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    header_list: list[tuple[str, str]]
    body: bytes


@dataclass
class StandIn:
    name: str = "standin"
    received: list[Received] = field(default_factory=list)
    ready: bool = True
    openapi: dict[str, Any] | None = None
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        header_list = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        path: str = scope["path"]
        query = scope["query_string"].decode("latin-1")
        if path == "/readyz":
            await _json(send, 200 if self.ready else 503, {"ready": self.ready})
            return
        if path == "/openapi.json":
            await _json(send, 200 if self.openapi else 404, self.openapi or {})
            return
        self.received.append(
            Received(scope["method"], path, query, dict(header_list), header_list, body)
        )
        parts = path.split("/")
        action = parts[2] if len(parts) > 2 else ""
        params = dict(item.split("=", 1) for item in query.split("&") if "=" in item)
        if action == "slow":
            await asyncio.sleep(float(params.get("seconds", "1")))
            await _json(send, 200, {"slept": True})
        elif action == "status" and parts[3] in {"204", "304"}:
            headers = [(b"etag", b'"v1"')] if parts[3] == "304" else []
            await send({"type": "http.response.start", "status": int(parts[3]), "headers": headers})
            await send({"type": "http.response.body", "body": b""})
        elif action == "status":
            await _json(send, int(parts[3]), {"status": int(parts[3])})
        elif action == "big":
            size = int(params.get("size", "1000000"))
            await send({"type": "http.response.start", "status": 200, "headers": []})
            chunk = b"x" * 65536
            sent = 0
            while sent < size:
                piece = chunk[: min(len(chunk), size - sent)]
                sent += len(piece)
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            await _json(
                send,
                200,
                {
                    "service": self.name,
                    "method": scope["method"],
                    "path": path,
                    "query": query,
                    "headers": header_list,
                    "body": body.decode("latin-1"),
                },
                extra=self.response_headers,
            )


async def _json(
    send: Send, status: int, payload: Any, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": body})


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Server:
    """One ASGI app on one port; ``start()`` and ``stop()`` may be called repeatedly."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            access_log=False,
            lifespan="auto",
            timeout_graceful_shutdown=5,
            server_header=False,  # as `mercato serve` runs uvicorn; banners are tested explicitly
        )
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the server stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self._server = None
        self._task = None


@contextlib.asynccontextmanager
async def serve(app: Any, port: int | None = None) -> AsyncIterator[Server]:
    server = Server(app, port)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def closing_server() -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server that reads a request and closes the connection without an answer;
    yields its URL and a list that grows by one per connection."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
        writer.close()

    port = free_port()
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}", connections
    finally:
        server.close()
        await server.wait_closed()
