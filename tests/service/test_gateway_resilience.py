"""Circuit breakers per upstream instance, readiness aggregation, metrics and draining."""

from __future__ import annotations

import asyncio
from functools import partial

import httpx
import pytest
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from mercato.gateway import upstreams
from mercato.platform.resilience import CircuitBreaker
from support.clock import FakeClock
from support.gateway import gateway_settings, running
from support.standin import Server, StandIn, serve
from support.waiting import eventually

pytestmark = pytest.mark.anyio


def breaker_state(metrics: str, upstream: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("upstream_circuit_state{") and f'upstream="{upstream}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no breaker gauge for {upstream}")


async def test_dead_upstream_opens_the_breaker_then_503_fast_then_closes_when_healed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()  # the gateway's breakers read it: the reset timeout passes on demand
    monkeypatch.setattr(upstreams, "CircuitBreaker", partial(CircuitBreaker, clock=clock))
    standin = StandIn()
    server = Server(standin)  # not started: the upstream is dead
    settings = gateway_settings(
        {"products": server.url},
        upstream_fail_threshold=2,
        upstream_fail_timeout=30.0,
        upstream_retries=0,
    )
    async with running(settings) as (_, http):
        first = [await http.get("/api/v1/products/echo") for _ in range(2)]
        assert [r.status_code for r in first] == [502, 502]

        await server.start()  # healed, but the breaker is open: no call gets through yet
        try:
            refused = await http.get("/api/v1/products/echo")
            assert refused.status_code == 503
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["type"] == "urn:mercato:problem:circuit-open"
            assert refused.headers["retry-after"] == "30"
            assert standin.received == []
            metrics = (await http.get("/metrics")).text
            assert breaker_state(metrics, "products") == 2
            assert (
                'gateway_upstream_errors_total{kind="circuit_open",upstream="products"}' in metrics
            )

            clock.now += 30  # past the reset timeout: one trial call is let through
            assert breaker_state((await http.get("/metrics")).text, "products") == 1
            healed = await http.get("/api/v1/products/echo")
            assert healed.status_code == 200
            assert len(standin.received) == 1
            assert breaker_state((await http.get("/metrics")).text, "products") == 0
        finally:
            await server.stop()


async def test_an_upstream_answering_503_trips_its_breaker() -> None:
    standin = StandIn()
    async with (
        serve(standin) as upstream,
        running(
            gateway_settings(
                {"orders": upstream.url}, upstream_fail_threshold=3, upstream_retries=0
            )
        ) as (_, http),
    ):
        statuses = [(await http.get("/api/v1/orders/status/503")).status_code for _ in range(3)]
        after = await http.get("/api/v1/orders/echo")
    assert statuses == [503, 503, 503]
    assert after.status_code == 503
    assert after.json()["type"] == "urn:mercato:problem:circuit-open"
    assert len(standin.received) == 3


async def test_a_404_or_500_answer_does_not_trip_the_breaker() -> None:
    standin = StandIn()
    async with (
        serve(standin) as upstream,
        running(gateway_settings({"orders": upstream.url}, upstream_fail_threshold=2)) as (_, http),
    ):
        for code in (404, 500, 404, 500):
            assert (await http.get(f"/api/v1/orders/status/{code}")).status_code == code
        assert (await http.get("/api/v1/orders/echo")).status_code == 200


async def test_a_failing_instance_is_skipped_while_the_other_serves() -> None:
    live = StandIn("live")
    dead = Server(StandIn("dead"))
    async with (
        serve(live) as upstream,
        running(
            gateway_settings(
                {"products": [dead.url, upstream.url]},
                upstream_fail_threshold=1,
                upstream_retries=1,
            )
        ) as (_, http),
    ):
        answers = [await http.get("/api/v1/products/echo") for _ in range(6)]
        metrics = (await http.get("/metrics")).text
    assert all(answer.status_code == 200 for answer in answers)
    # The dead instance was tried once, then skipped: one connect error in all.
    assert 'gateway_upstream_errors_total{kind="connect",upstream="products"} 1.0' in metrics


async def test_readyz_aggregates_the_services() -> None:
    ready, unready = StandIn(), StandIn()
    unready.ready = False
    async with (
        serve(ready) as one,
        serve(unready) as two,
        running(gateway_settings({"products": one.url, "orders": two.url})) as (_, http),
    ):
        degraded = await http.get("/readyz")
        unready.ready = True
        healthy = await http.get("/readyz")
    assert degraded.status_code == 503
    assert degraded.json()["checks"]["products"] == "ok"
    assert degraded.json()["checks"]["orders"] == "answered 503"
    assert healthy.status_code == 200


async def test_readyz_says_which_checks_of_a_service_failed_and_never_where() -> None:
    async def unready(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            checks = {"schema": "the orders schema is behind", "cache": "ok"}
            await JSONResponse({"checks": checks}, status_code=503)(scope, receive, send)

    async with serve(unready) as upstream, serve(StandIn()) as other:
        routes = {"orders": upstream.url, "products": other.url}
        async with running(gateway_settings(routes)) as (_, http):
            degraded = await http.get("/readyz")
    dead = {"orders": "http://127.0.0.1:9"}
    async with running(gateway_settings(dead)) as (_, http):
        unreachable = await http.get("/readyz")
    assert degraded.json()["checks"]["orders"] == "answered 503: schema"
    assert unreachable.json()["checks"]["orders"].startswith("unreachable")
    for answer in (degraded, unreachable):
        assert answer.status_code == 503
        assert str(upstream.port) not in answer.text
        assert "127.0.0.1" not in answer.text


async def test_metrics_count_proxied_requests_per_route_and_upstream() -> None:
    standin = StandIn()
    async with (
        serve(standin) as upstream,
        running(gateway_settings({"products": upstream.url})) as (_, http),
    ):
        await http.get("/api/v1/products/echo")
        await http.get("/api/v1/products/status/404")
        metrics = (await http.get("/metrics")).text
    assert 'gateway_upstream_requests_total{status="200",upstream="products"} 1.0' in metrics
    assert 'gateway_upstream_requests_total{status="404",upstream="products"} 1.0' in metrics
    assert 'route="/api/v1/products/{path}"' in metrics
    assert 'gateway_upstream_duration_seconds_count{upstream="products"} 2.0' in metrics


async def test_shutdown_drains_requests_in_flight() -> None:
    from mercato.gateway.app import create_app

    standin = StandIn()
    async with serve(standin) as upstream:
        gateway = Server(create_app(gateway_settings({"products": upstream.url})))
        await gateway.start()
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            pending = asyncio.create_task(http.get("/api/v1/products/slow?seconds=0.5"))
            await eventually(lambda: standin.received)
            await gateway.stop()  # asks the server to exit while the request is in flight
            response = await pending
    assert response.status_code == 200
    assert response.json() == {"slept": True}
