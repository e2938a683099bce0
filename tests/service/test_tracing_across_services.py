"""One order placed through the gateway is one trace: the gateway's, orders' and products'
server spans, their client and database spans, and the spans of the events the order
caused (``order.placed`` handled by products, ``stock.reserved`` handled by orders).

Products and orders run on real ports (the gateway proxies over HTTP, orders calls
products over HTTP), the gateway in-process; the three share one memory broker and one
:class:`Tracing` whose processor writes to an in-memory exporter, as ``mercato up`` shares
one exporter between its services.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from mercato.gateway.app import create_app as create_gateway
from mercato.messaging import SharedMessaging, in_process_broker
from mercato.orders.app import create_app as create_orders
from mercato.platform.telemetry import Tracing
from mercato.products.app import create_app as create_products
from mercato.settings import Settings
from support.auth import admin_headers, auth_headers, test_settings
from support.messaging import drain
from support.servers import free_port
from support.standin import serve

pytestmark = pytest.mark.anyio

#: The client's own trace (W3C): the gateway continues it.
CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE_ID}-00f067aa0ba902b7-01"


def service_of(span: ReadableSpan) -> str:
    return str(span.resource.attributes["service.name"])


def seen(spans: Sequence[ReadableSpan]) -> set[tuple[str, SpanKind, str]]:
    return {(service_of(span), span.kind, span.name) for span in spans}


def one(spans: Sequence[ReadableSpan], service: str, name: str) -> ReadableSpan:
    (found,) = [s for s in spans if service_of(s) == service and s.name == name]
    return found


@asynccontextmanager
async def gateway(settings: Settings, tracing: Tracing) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_gateway(settings, tracing=tracing)
    transport = httpx.ASGITransport(app, client=("127.0.0.1", 50000))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client,
    ):
        yield client


async def test_an_order_through_the_gateway_and_its_events_are_one_trace(tmp_path: Path) -> None:
    exported = InMemorySpanExporter()
    tracing = Tracing(SimpleSpanProcessor(exported))
    products_port, orders_port = free_port(), free_port()
    products_url = f"http://127.0.0.1:{products_port}"
    settings = test_settings(
        products_database_url=f"sqlite+aiosqlite:///{tmp_path / 'products.db'}",
        orders_database_url=f"sqlite+aiosqlite:///{tmp_path / 'orders.db'}",
        data_dir=tmp_path,
        products_url=products_url,
        gateway_routes={"products": products_url, "orders": f"http://127.0.0.1:{orders_port}"},
        rate_limit_api="10000/minute",
        rate_limit_user="10000/minute",
    )
    shared = SharedMessaging(broker=in_process_broker(settings))
    products = create_products(settings, shared=shared, tracing=tracing)
    orders = create_orders(settings, shared=shared, tracing=tracing)
    async with (
        serve(products, products_port),
        serve(orders, orders_port),
        gateway(settings, tracing) as client,
    ):
        sku = f"SKU-{uuid.uuid4().hex[:8]}"
        created = await client.post(
            "/api/v1/products",
            json={"sku": sku, "name": "Lamp", "price": "12.50", "stock": 3},
            headers=admin_headers(),
        )
        assert created.status_code == 201, created.text
        await drain(orders, products)
        exported.clear()

        placed = await client.post(
            "/api/v1/orders",
            json={"items": [{"product_id": created.json()["id"], "quantity": 1}]},
            headers={**auth_headers("shopper-1"), "traceparent": CLIENT_TRACEPARENT},
        )
        assert placed.status_code == 201, placed.text
        await drain(orders, products)
        tracing.flush()

    spans = exported.get_finished_spans()
    front = one(spans, "gateway", "POST /api/v1/orders/{path}")
    assert front.kind is SpanKind.SERVER
    assert f"{front.context.trace_id:032x}" == CLIENT_TRACE_ID
    trace = [s for s in spans if s.context.trace_id == front.context.trace_id]
    assert {service_of(s) for s in trace} == {"gateway", "orders", "products"}
    assert {
        ("gateway", SpanKind.CLIENT, "POST"),  # the proxy's call, traceparent injected
        ("orders", SpanKind.SERVER, "POST /orders"),
        ("orders", SpanKind.CLIENT, "GET"),  # the products client
        ("products", SpanKind.SERVER, "GET /products"),
        ("orders", SpanKind.PRODUCER, "create order.placed"),
        ("orders", SpanKind.CLIENT, "send order.placed"),
        ("products", SpanKind.CONSUMER, "process order.placed"),
        ("products", SpanKind.PRODUCER, "create stock.reserved"),
        ("orders", SpanKind.CONSUMER, "process stock.reserved"),
    } <= seen(trace)
    databases = {service_of(s) for s in trace if "db.system" in (s.attributes or {})}
    assert databases == {"orders", "products"}

    # The event's consumer span is the child of the span it was created in.
    created_in = one(trace, "orders", "create order.placed")
    handled = one(trace, "products", "process order.placed")
    assert handled.parent is not None
    assert handled.parent.span_id == created_in.context.span_id
    reply = one(trace, "orders", "process stock.reserved")
    assert reply.parent is not None
    assert reply.parent.span_id == one(trace, "products", "create stock.reserved").context.span_id
    assert not [s for s in spans if s.name.endswith(("/healthz", "/readyz", "/metrics"))]
