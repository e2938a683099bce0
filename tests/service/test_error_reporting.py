"""Error reporting: with ``SENTRY_DSN`` pointing at a local ingest endpoint, an unhandled
exception and a failing event handler arrive there, tagged, and nothing secret or personal
arrives with them."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import sentry_sdk
from fastapi import APIRouter, Request

from mercato.messaging import in_process_broker
from mercato.platform.app import create_service_app
from support.messaging import drain
from support.messaging_apps import (
    Behaviour,
    consumer_app,
    messaging_settings,
    producer_app,
    running,
)
from support.servers import serving_in_thread
from support.waiting import eventually

pytestmark = pytest.mark.anyio

PASSWORD, TOKEN, EMAIL = "hunter2-Secret", "tok-9f8e7d", "alice@example.com"
BEARER = "Bearer eyJhbGciOi.secret.jwt"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


class Ingest:
    """Sentry's ingest endpoint, as far as the SDK's transport needs: every envelope body
    (decompressed) it was sent, and the events in them."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        ingest = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                ingest.bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.dsn = f"http://publickey@127.0.0.1:{self.server.server_address[1]}/1"

    @property
    def events(self) -> list[dict[str, Any]]:
        found = []
        for body in self.bodies:
            for line in body.splitlines():
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if isinstance(item, dict) and "exception" in item:
                    found.append(item)
        return found

    @property
    def raw(self) -> bytes:
        return b"\n".join(self.bodies)


@pytest.fixture
def ingest() -> Iterator[Ingest]:
    ingest = Ingest()
    with serving_in_thread(ingest.server):
        try:
            yield ingest
        finally:
            sentry_sdk.get_client().close(timeout=2)
            sentry_sdk.get_global_scope().set_client(None)


def failing_router() -> APIRouter:
    router = APIRouter()

    @router.post("/checkout")
    async def checkout(request: Request) -> None:
        body = await request.json()
        password = body["password"]  # a local variable the report must not show
        raise RuntimeError(f"the card was declined for {body['email']} ({len(password)})")

    return router


async def test_an_unhandled_exception_arrives_tagged_and_scrubbed(ingest: Ingest) -> None:
    settings = messaging_settings(sentry_dsn=ingest.dsn)
    app = create_service_app(
        settings, "orders", title="t", routers=[failing_router()], uses_database=False
    )
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        response = await client.post(
            "/checkout?token=" + TOKEN,
            json={"password": PASSWORD, "token": TOKEN, "email": EMAIL, "note": "hi"},
            headers={
                "Authorization": BEARER,
                "Cookie": f"session={TOKEN}",
                "X-Request-ID": "req-sentry-1",
                "traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01",
            },
        )
        assert response.status_code == 500
        sentry_sdk.flush(timeout=5)

    (event,) = ingest.events
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    assert event["tags"]["request_id"] == "req-sentry-1"
    assert event["tags"]["trace_id"] == TRACE_ID
    assert event["tags"]["service"] == "orders"
    assert event["release"].startswith("mercato@")
    assert event["request"]["data"]["note"] == "hi"  # the body is there, scrubbed
    for secret in (PASSWORD, TOKEN, EMAIL, BEARER.split()[1], "alice"):
        assert secret.encode() not in ingest.raw, secret


async def test_a_failing_handler_is_reported_per_attempt_with_its_event(ingest: Ingest) -> None:
    settings = messaging_settings(sentry_dsn=ingest.dsn, messaging_max_attempts=2)
    behaviour = Behaviour(always_fail={7})
    broker = in_process_broker(settings)  # memory: the two apps share it
    producer = producer_app(settings, broker=broker)
    consumer = consumer_app(settings, behaviour, broker=broker)
    async with running(consumer, producer):
        transport = httpx.ASGITransport(producer)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            published = await client.post("/things?n=7", headers={"X-Request-ID": "req-evt-7"})
        assert published.status_code == 200
        await drain(producer, consumer)
        await eventually(lambda: behaviour.calls.get(7) == 2, within=10)
        sentry_sdk.flush(timeout=5)

    events = ingest.events
    assert [(e["level"], e["tags"]["outcome"]) for e in events] == [
        ("warning", "retry"),
        ("error", "dead_letter"),
    ]
    for attempt, event in enumerate(events, start=1):
        assert event["tags"]["event_type"] == "test.thing_happened"
        assert event["tags"]["event_id"] == published.json()["id"]
        assert event["tags"]["consumer"] == "products"
        assert event["tags"]["attempt"] == str(attempt)
        assert event["tags"]["request_id"] == "req-evt-7"
