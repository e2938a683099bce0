"""The gateway under uvicorn as `mercato up` runs it, against hostile clients on raw sockets:
huge headers (431 before they are read), slow headers and bodies (408), idle connections
(closed), too many connections (503), two Host headers (400), and what the HTTP parser
refuses (400, or 501 for an unknown method), each a problem with the security headers."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mercato.gateway.app import create_app
from mercato.serving import EmbeddedServer, uvicorn_config
from mercato.settings import Settings
from support.gateway import gateway_settings
from support.servers import free_port
from support.standin import StandIn, serve
from support.waiting import eventually

pytestmark = pytest.mark.anyio

#: An outer bound for what the server must do on its own; never reached when it works.
PATIENCE = 15.0


@contextlib.asynccontextmanager
async def listening(settings: Settings) -> AsyncIterator[int]:
    """The gateway app served by uvicorn with Mercato's configuration; yields its port."""
    port = free_port()
    server = EmbeddedServer(uvicorn_config(create_app(settings), settings, port))
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started or task.done())
    assert server.started
    try:
        yield port
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def gateway(**overrides: Any) -> AsyncIterator[tuple[int, StandIn]]:
    standin = StandIn()
    async with serve(standin) as upstream:
        settings = gateway_settings({"products": upstream.url}, **overrides)
        async with listening(settings) as port:
            yield port, standin


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), PATIENCE)


def parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def request(path: str = "/api/v1/products/echo", *extra: str, body: bytes = b"") -> bytes:
    lines = [f"{'POST' if body else 'GET'} {path} HTTP/1.1", "Host: gateway.test", *extra]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def test_a_huge_header_is_431_before_it_is_read_whole() -> None:
    """httptools alone keeps an unfinished header in memory however long it grows (a 32 MiB
    one was accepted): the answer must come while the header is still arriving."""
    async with gateway() as (port, standin):
        reader, writer = await connect(port)
        writer.write(b"GET /api/v1/products/echo HTTP/1.1\r\nHost: gateway.test\r\nX-Big: ")
        writer.write(b"a" * 64 * 1024)  # and the header never ends
        answer = await read_to_end(reader)
        writer.close()
    status, headers, body = parse(answer)
    assert status == 431
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["request_id"] == headers["x-request-id"]
    assert headers["connection"] == "close"
    assert standin.received == []


async def test_the_431_reaches_a_client_that_keeps_sending() -> None:
    async with gateway() as (port, _):
        reader, writer = await connect(port)
        writer.write(b"GET / HTTP/1.1\r\nHost: gateway.test\r\nX-Big: ")

        async def flood() -> None:
            with contextlib.suppress(ConnectionError):
                for _ in range(256):
                    writer.write(b"a" * 65536)
                    await writer.drain()

        sender = asyncio.create_task(flood())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PATIENCE)
        await sender
        writer.close()
    assert parse(head)[0] == 431


async def test_headers_within_the_limit_and_a_body_in_the_same_packet_go_through() -> None:
    body = b"x" * 200_000
    async with gateway(max_header_bytes=2048) as (port, standin):
        reader, writer = await connect(port)
        writer.write(request("/api/v1/products/echo", "X-Pad: " + "p" * 1500, body=body))
        writer.write(request("/api/v1/products/echo", "Connection: close"))
        answers = await read_to_end(reader)
        writer.close()
    assert answers.count(b"HTTP/1.1 200 OK") == 2
    assert [len(r.body) for r in standin.received] == [len(body), 0]


async def test_a_slow_header_is_cut_off_with_408() -> None:
    async with gateway(request_read_timeout=0.5) as (port, _):
        reader, writer = await connect(port)
        writer.write(b"GET /api/v1/products/echo HTTP/1.1\r\nHost: gate")
        answer = await read_to_end(reader)
        writer.close()
    status, headers, body = parse(answer)
    assert status == 408
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == 408


async def test_a_slow_body_is_cut_off_with_408_and_never_forwarded() -> None:
    async with gateway(request_read_timeout=0.5) as (port, standin):
        reader, writer = await connect(port)
        writer.write(request(body=b"x" * 100)[:-90])  # the head and 10 bytes of 100
        answer = await read_to_end(reader)
        writer.close()
    assert parse(answer)[0] == 408
    assert standin.received == []


async def test_a_connection_that_sends_nothing_is_closed() -> None:
    async with gateway(request_read_timeout=0.5) as (port, _):
        reader, writer = await connect(port)
        answer = await read_to_end(reader)
        writer.close()
    assert answer == b""


async def test_an_idle_kept_alive_connection_is_closed() -> None:
    async with gateway(keep_alive_timeout=1) as (port, _):
        reader, writer = await connect(port)
        writer.write(request())
        answer = await read_to_end(reader)
        writer.close()
    assert parse(answer)[0] == 200


async def test_connections_past_the_limit_get_503_problem_until_one_closes() -> None:
    async def get(port: int) -> bytes:
        reader, writer = await connect(port)
        writer.write(request("/healthz", "Connection: close"))
        answer = await read_to_end(reader)
        writer.close()
        return answer

    async with gateway(max_connections=3) as (port, _):
        idle = [await connect(port) for _ in range(2)]
        at_the_limit = await get(port)  # the third connection
        idle.append(await connect(port))
        refused = await get(port)  # the fourth
        for _, idle_writer in idle:
            idle_writer.close()

        async def served() -> bool:
            return parse(await get(port))[0] == 200

        await eventually(served)
    assert parse(at_the_limit)[0] == 200
    status, headers, body = parse(refused)
    assert status == 503
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["request_id"] == headers["x-request-id"]
    assert headers["retry-after"] == "1"


async def test_two_host_headers_are_400_with_a_request_id() -> None:
    async with gateway() as (port, standin):
        reader, writer = await connect(port)
        writer.write(
            b"GET /api/v1/products/echo HTTP/1.1\r\nHost: gateway.test\r\nHost: evil.example\r\n"
            b"Connection: close\r\n\r\n"
        )
        answer = await read_to_end(reader)
        writer.close()
    status, headers, body = parse(answer)
    assert status == 400
    assert json.loads(body)["request_id"] == headers["x-request-id"]
    assert standin.received == []


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"TRACK / HTTP/1.1\r\nHost: gateway.test\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\nHost: gateway.test\r\nBad Header: x\r\n\r\n", 400),
        (b"GET / HTTP/9\r\n\r\n", 400),
    ],
    ids=["unknown-method", "malformed-header", "malformed-version"],
)
async def test_what_the_parser_refuses_is_a_problem_with_the_security_headers(
    head: bytes, status: int
) -> None:
    async with gateway() as (port, standin):
        reader, writer = await connect(port)
        writer.write(head)
        answer = await read_to_end(reader)
        writer.close()
    got, headers, body = parse(answer)
    assert got == status
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == status
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert standin.received == []
