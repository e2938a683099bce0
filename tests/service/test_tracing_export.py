"""With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, a service's spans are posted, OTLP/HTTP, to
``<endpoint>/v1/traces``: here a local stand-in for the collector."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from mercato.platform.app import create_service_app
from support.messaging_apps import messaging_settings
from support.servers import serving_in_thread

pytestmark = pytest.mark.anyio


class Collector:
    """Records each OTLP/HTTP export request: its path and its decoded body."""

    def __init__(self) -> None:
        self.received: list[tuple[str, ExportTraceServiceRequest]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                collector.received.append((self.path, ExportTraceServiceRequest.FromString(body)))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> list[tuple[str, str]]:
        """``(service.name, span name)`` of every span received."""
        found = []
        for _, request in self.received:
            for resource_spans in request.resource_spans:
                attributes = {
                    a.key: a.value.string_value for a in resource_spans.resource.attributes
                }
                for scope_spans in resource_spans.scope_spans:
                    found += [(attributes["service.name"], s.name) for s in scope_spans.spans]
        return found


@pytest.fixture
def collector() -> Iterator[Collector]:
    collector = Collector()
    with serving_in_thread(collector.server):
        yield collector


async def test_spans_are_exported_to_the_collector_the_settings_name(
    collector: Collector,
) -> None:
    router = APIRouter()

    @router.get("/things/{thing_id}")
    async def thing(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    settings = messaging_settings(otel_exporter_otlp_endpoint=collector.url)
    app = create_service_app(settings, "orders", title="t", routers=[router], uses_database=False)
    transport = httpx.ASGITransport(app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        assert (await client.get("/things/7")).status_code == 200
        assert (await client.get("/healthz")).status_code == 200
    # Leaving the lifespan sent the batch.
    assert {path for path, _ in collector.received} == {"/v1/traces"}
    assert collector.spans() == [("orders", "GET /things/{thing_id}")]
