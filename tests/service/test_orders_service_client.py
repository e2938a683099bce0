"""ServiceClient against a real local HTTP server: timeouts, bounded retries, the circuit
breaker, and 503 problems when the upstream cannot answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from mercato.platform.http import (
    ClientPolicy,
    ServiceClient,
    ServiceClients,
    UpstreamUnavailable,
    open_service_clients,
)
from mercato.platform.middleware import request_id_var
from mercato.platform.resilience import BreakerState, CircuitBreaker, CircuitOpenError
from support.servers import free_port

pytestmark = pytest.mark.anyio


@dataclass
class Upstream:
    url: str
    answers: list[int] = field(default_factory=list)  # statuses to give, in order; then 200
    calls: list[str] = field(default_factory=list)
    request_ids: list[str | None] = field(default_factory=list)
    slow: bool = False


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    port = free_port()
    state = Upstream(url=f"http://127.0.0.1:{port}")

    async def handle(request: web.Request) -> web.Response:
        state.calls.append(request.method)
        state.request_ids.append(request.headers.get("X-Request-ID"))
        if state.slow:
            import asyncio

            await asyncio.sleep(0.3)
        status = state.answers.pop(0) if state.answers else 200
        return web.json_response({"status": status}, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield state
    finally:
        await runner.cleanup()


FAST = ClientPolicy(
    timeout=0.3,
    connect_timeout=0.3,
    retries=2,
    backoff=0.001,
    backoff_max=0.002,
    failure_threshold=3,
    reset_timeout=60,
)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_an_answer_below_500_is_returned_as_is(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    upstream.answers = [404]
    breaker = CircuitBreaker("products", failure_threshold=1)
    client = ServiceClient("products", upstream.url, session=session, policy=FAST, breaker=breaker)
    response = await client.get("/products/x")
    assert response.status == 404
    assert response.json() == {"status": 404}
    assert upstream.calls == ["GET"]
    assert breaker.state is BreakerState.CLOSED  # a 404 is an answer, not a failure


async def test_idempotent_calls_are_retried_until_an_answer(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    upstream.answers = [503, 502]
    client = ServiceClient("products", upstream.url, session=session, policy=FAST)
    response = await client.get("/products/x")
    assert response.status == 200
    assert upstream.calls == ["GET", "GET", "GET"]


async def test_retries_are_bounded_then_503(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    upstream.answers = [503] * 10
    client = ServiceClient("products", upstream.url, session=session, policy=FAST)
    with pytest.raises(UpstreamUnavailable) as caught:
        await client.get("/products/x")
    assert caught.value.status == 503
    assert len(upstream.calls) == 3  # the first try and two retries


async def test_a_slow_upstream_times_out(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    upstream.slow = True
    policy = ClientPolicy(timeout=0.05, retries=0, failure_threshold=5)
    client = ServiceClient("products", upstream.url, session=session, policy=policy)
    with pytest.raises(UpstreamUnavailable):
        await client.get("/products/x")


async def test_an_unreachable_upstream_opens_the_breaker_which_then_refuses_at_once(
    session: aiohttp.ClientSession,
) -> None:
    client = ServiceClient(
        "products", f"http://127.0.0.1:{free_port()}", session=session, policy=FAST
    )
    with pytest.raises(UpstreamUnavailable):
        await client.get("/products/x")  # three failed attempts reach the threshold
    assert client.breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError) as caught:
        await client.get("/products/x")
    assert caught.value.status == 503
    assert "Retry-After" in caught.value.headers


async def test_the_request_id_is_passed_on(
    upstream: Upstream, session: aiohttp.ClientSession
) -> None:
    client = ServiceClient("products", upstream.url, session=session, policy=FAST)
    token = request_id_var.set("req-123")
    try:
        await client.get("/products/x")
    finally:
        request_id_var.reset(token)
    assert upstream.request_ids == ["req-123"]


async def test_service_clients_share_one_session_and_keep_a_breaker_per_upstream(
    upstream: Upstream,
) -> None:
    clients = ServiceClients({"products": upstream.url, "users": upstream.url}, policy=FAST)
    with pytest.raises(RuntimeError):
        clients["products"]
    async with open_service_clients(clients):
        assert (await clients["products"].get("/p")).status == 200
        assert clients["products"].session is clients["users"].session
        assert clients.breakers["products"] is not clients.breakers["users"]
    with pytest.raises(RuntimeError):
        clients["products"]
