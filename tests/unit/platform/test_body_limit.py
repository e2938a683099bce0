"""The request body limit every service has: 413 problem+json, before the route runs when
``Content-Length`` says so, and as soon as the bytes pass the limit when it does not."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel

from mercato.platform.errors import PROBLEM_JSON, install_error_handlers
from mercato.platform.middleware import BodyLimitMiddleware, RequestContextMiddleware
from support.asgi import call_asgi

pytestmark = pytest.mark.anyio

LIMIT = 1000


class Note(BaseModel):
    text: str


def build_app() -> tuple[FastAPI, list[int]]:
    app = FastAPI()
    install_error_handlers(app, expose_internals=False)
    bytes_seen: list[int] = []

    @app.post("/notes")
    async def create(note: Note) -> Note:
        return note

    @app.post("/raw")
    async def raw(request: Request) -> dict[str, int]:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            bytes_seen.append(total)
        return {"bytes": total}

    @app.post("/ignores-body")
    async def ignores_body() -> dict[str, bool]:
        bytes_seen.append(-1)  # the route ran
        return {"ran": True}

    app.add_middleware(BodyLimitMiddleware, max_bytes=LIMIT)
    app.add_middleware(RequestContextMiddleware, service="test", log_requests=False)
    return app, bytes_seen


@pytest.fixture
async def served() -> AsyncIterator[tuple[httpx.AsyncClient, list[int]]]:
    app, bytes_seen = build_app()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client, bytes_seen


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["connection"] == "close"
    body = response.json()
    assert body["status"] == 413
    assert body["request_id"] == response.headers["x-request-id"]
    assert str(LIMIT) in body["detail"]


async def test_a_body_within_the_limit_is_served(
    served: tuple[httpx.AsyncClient, list[int]],
) -> None:
    client, _ = served
    response = await client.post("/notes", json={"text": "x" * (LIMIT - 20)})
    assert response.status_code == 200


async def test_a_declared_length_over_the_limit_is_refused_before_the_route_runs(
    served: tuple[httpx.AsyncClient, list[int]],
) -> None:
    client, bytes_seen = served
    response = await client.post("/ignores-body", content=b"x" * (LIMIT + 1))
    assert_too_large(response)
    assert bytes_seen == []  # the route never ran


async def test_a_json_body_over_the_limit_is_refused(
    served: tuple[httpx.AsyncClient, list[int]],
) -> None:
    client, _ = served
    assert_too_large(await client.post("/notes", json={"text": "x" * LIMIT}))


async def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(
    served: tuple[httpx.AsyncClient, list[int]],
) -> None:
    client, bytes_seen = served
    sent: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(1000):  # 100 KB if nobody stopped it
            sent.append(100)
            yield b"y" * 100

    response = await client.post("/raw", content=endless())  # no Content-Length: chunked
    assert_too_large(response)
    assert max(bytes_seen) <= LIMIT  # the route never saw a byte past the limit
    assert len(sent) <= LIMIT // 100 + 1  # and the rest was never read


async def test_a_body_longer_than_its_content_length_is_cut_off_too() -> None:
    app, _ = build_app()
    messages = [
        {"type": "http.request", "body": b'{"text": "' + b"z" * 600, "more_body": True},
        {"type": "http.request", "body": b"z" * 600 + b'"}', "more_body": False},
    ]
    sent = await call_asgi(
        app,
        "POST",
        "/notes",
        headers=[(b"content-type", b"application/json"), (b"content-length", b"20")],
        messages=messages,
        client=("203.0.113.1", 1234),
    )
    assert sent[0]["status"] == 413
