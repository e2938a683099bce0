"""The proxy: paths, bodies and headers both ways, hop-by-hop removal, forwarding headers,
request ids, round-robin, retries, timeouts and body limits."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from support.gateway import gateway_settings, running
from support.standin import StandIn, closing_server, serve

pytestmark = pytest.mark.anyio


async def test_forwards_method_path_query_and_body_and_relays_the_answer() -> None:
    standin = StandIn(response_headers=[(b"etag", b'"v1"'), (b"server", b"leaky/1.0")])
    async with (
        serve(standin) as upstream,
        running(gateway_settings({"products": upstream.url})) as (_, http),
    ):
        response = await http.post(
            "/api/v1/products/echo/a%2Fb?x=1&y=%20z",
            content=b'{"name": "lamp"}',
            headers={"Content-Type": "application/json", "X-Request-ID": "req-123"},
        )
    assert response.status_code == 200
    seen = standin.received[0]
    assert (seen.method, seen.path, seen.query) == ("POST", "/products/echo/a/b", "x=1&y=%20z")
    assert seen.body == b'{"name": "lamp"}'
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["x-request-id"] == "req-123"
    assert response.headers["x-request-id"] == "req-123"
    assert response.headers["etag"] == '"v1"'
    assert "server" not in response.headers


async def test_hop_by_hop_headers_are_not_forwarded() -> None:
    standin = StandIn()
    async with (
        serve(standin) as upstream,
        running(gateway_settings({"products": upstream.url})) as (_, http),
    ):
        await http.get(
            "/api/v1/products/echo",
            headers={
                "Connection": "keep-alive, X-Secret-Hop",
                "X-Secret-Hop": "1",
                "Proxy-Authorization": "Basic abc",
                "TE": "trailers",
                "Upgrade": "websocket",
                "X-Kept": "yes",
            },
        )
    names = {name.lower() for name, _ in standin.received[0].header_list}
    assert "x-kept" in names
    assert not names & {"x-secret-hop", "proxy-authorization", "te", "upgrade"}


async def test_sets_forwarded_headers_and_ignores_a_spoofed_forwarded_for() -> None:
    standin = StandIn()
    async with (
        serve(standin) as upstream,
        running(gateway_settings({"products": upstream.url}), client=("203.0.113.9", 4000)) as (
            _,
            http,
        ),
    ):
        await http.get(
            "/api/v1/products/echo",
            headers={
                "X-Forwarded-For": "1.2.3.4",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "evil.example",
            },
        )
    headers = standin.received[0].headers
    assert headers["x-forwarded-for"] == "203.0.113.9"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == "gateway.test"


async def test_keeps_the_forwarded_chain_of_a_trusted_proxy() -> None:
    standin = StandIn()
    async with (
        serve(standin) as upstream,
        running(
            gateway_settings({"products": upstream.url}, trusted_proxies="10.0.0.0/8"),
            client=("10.0.0.5", 4000),
        ) as (_, http),
    ):
        await http.get(
            "/api/v1/products/echo",
            headers={"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https"},
        )
    headers = standin.received[0].headers
    assert headers["x-forwarded-for"] == "198.51.100.7, 10.0.0.5"
    assert headers["x-forwarded-proto"] == "https"


async def test_a_request_id_is_made_when_the_client_sends_none() -> None:
    standin = StandIn()
    async with (
        serve(standin) as upstream,
        running(gateway_settings({"products": upstream.url})) as (_, http),
    ):
        response = await http.get("/api/v1/products/echo")
    sent = standin.received[0].headers["x-request-id"]
    assert sent
    assert response.headers["x-request-id"] == sent


async def test_conditional_and_bodiless_answers_pass_through() -> None:
    standin = StandIn()
    async with (
        serve(standin) as upstream,
        running(gateway_settings({"products": upstream.url})) as (_, http),
    ):
        not_modified = await http.get(
            "/api/v1/products/status/304", headers={"If-None-Match": '"v1"'}
        )
        no_content = await http.delete("/api/v1/products/status/204")
        head = await http.head("/api/v1/products/echo")
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    assert not_modified.headers["etag"] == '"v1"'
    assert standin.received[0].headers["if-none-match"] == '"v1"'
    assert no_content.status_code == 204
    assert no_content.content == b""
    assert head.status_code == 200
    assert head.content == b""


async def test_unknown_service_is_404_problem() -> None:
    async with running(gateway_settings({"products": "http://127.0.0.1:9"})) as (_, http):
        response = await http.get("/api/v1/nothing/here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_large_answers_stream_through() -> None:
    standin = StandIn()
    async with (
        serve(standin) as upstream,
        running(gateway_settings({"products": upstream.url})) as (_, http),
    ):
        response = await http.get("/api/v1/products/big?size=1500000")
    assert response.status_code == 200
    assert len(response.content) == 1_500_000


async def test_instances_are_used_round_robin() -> None:
    first, second = StandIn("one"), StandIn("two")
    async with (
        serve(first) as a,
        serve(second) as b,
        running(gateway_settings({"products": [a.url, b.url]})) as (_, http),
    ):
        names = [(await http.get("/api/v1/products/echo")).json()["service"] for _ in range(4)]
    assert sorted(names) == ["one", "one", "two", "two"]
    assert names[0] != names[1]


async def test_slow_upstream_answers_504() -> None:
    standin = StandIn()
    async with (
        serve(standin) as upstream,
        running(gateway_settings({"products": upstream.url}, upstream_timeout=0.2)) as (_, http),
    ):
        response = await http.get("/api/v1/products/slow?seconds=0.6")
    assert response.status_code == 504
    assert response.headers["content-type"] == "application/problem+json"
    assert len(standin.received) == 1  # a timeout is not retried


async def test_a_refused_connection_is_retried_on_another_instance_for_any_method() -> None:
    live = StandIn("live")
    async with (
        serve(live) as upstream,
        running(gateway_settings({"orders": ["http://127.0.0.1:9", upstream.url]})) as (_, http),
    ):
        answers = [await http.post("/api/v1/orders/echo", content=b"{}") for _ in range(4)]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 200]
    assert len(live.received) == 4


async def test_an_instance_that_cannot_be_reached_in_time_is_skipped_for_any_method() -> None:
    live = StandIn("live")
    with stalled_listener() as stalled:
        async with (
            serve(live) as upstream,
            running(
                gateway_settings({"orders": [stalled, upstream.url]}, upstream_connect_timeout=0.2)
            ) as (_, http),
        ):
            answers = [await http.post("/api/v1/orders/echo", content=b"{}") for _ in range(2)]
            metrics = (await http.get("/metrics")).text
    assert [answer.status_code for answer in answers] == [200, 200]
    assert len(live.received) == 2
    assert 'gateway_upstream_errors_total{kind="connect",upstream="orders"} 2.0' in metrics


@contextlib.contextmanager
def stalled_listener() -> Iterator[str]:
    """A port whose accept queue is full, so a new connection hangs in the handshake."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield f"http://127.0.0.1:{port}"
    finally:
        for filler in fillers:
            filler.close()
        server.close()


async def test_a_dropped_connection_is_retried_only_for_idempotent_methods() -> None:
    live = StandIn("live")
    async with (
        closing_server() as (dropping, drops),
        serve(live) as upstream,
        running(gateway_settings({"orders": [dropping, upstream.url]})) as (_, http),
    ):
        gets = [await http.get("/api/v1/orders/echo") for _ in range(2)]
        assert [g.status_code for g in gets] == [200, 200]
        posts = [await http.post("/api/v1/orders/echo", content=b"{}") for _ in range(2)]
    statuses = sorted(p.status_code for p in posts)
    # The POST sent to the dropping instance is not repeated elsewhere: 502, not a duplicate.
    assert statuses == [200, 502]
    assert [r.method for r in live.received].count("POST") == 1
    assert drops


async def test_body_above_the_limit_by_content_length_is_413_and_never_sent() -> None:
    standin = StandIn()
    async with (
        serve(standin) as upstream,
        running(gateway_settings({"products": upstream.url}, max_body_size=100)) as (_, http),
    ):
        response = await http.post("/api/v1/products/echo", content=b"x" * 101)
        fits = await http.post("/api/v1/products/echo", content=b"x" * 100)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert fits.status_code == 200
    assert [r.body for r in standin.received] == [b"x" * 100]


async def test_streamed_body_above_the_limit_is_413() -> None:
    standin = StandIn()

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 50

    async with (
        serve(standin) as upstream,
        running(gateway_settings({"products": upstream.url}, max_body_size=200)) as (_, http),
    ):
        response = await http.post("/api/v1/products/echo", content=chunks())
    assert response.status_code == 413
    assert all(len(r.body) <= 200 for r in standin.received)


async def test_streamed_body_within_the_limit_goes_through_whole() -> None:
    standin = StandIn()

    async def chunks() -> AsyncIterator[bytes]:
        for index in range(5):
            yield str(index).encode() * 40

    async with (
        serve(standin) as upstream,
        running(gateway_settings({"products": upstream.url}, max_body_size=200)) as (_, http),
    ):
        response = await http.post("/api/v1/products/echo", content=chunks())
    assert response.status_code == 200
    assert standin.received[0].body == b"".join(str(i).encode() * 40 for i in range(5))


async def test_over_real_http_bodiless_and_streamed_answers_keep_their_framing() -> None:
    from mercato.gateway.app import create_app
    from support.standin import Server

    standin = StandIn()
    async with serve(standin) as upstream:
        gateway = Server(create_app(gateway_settings({"products": upstream.url})))
        await gateway.start()
        try:
            async with httpx.AsyncClient(base_url=gateway.url) as http:
                not_modified = await http.get("/api/v1/products/status/304")
                head = await http.head("/api/v1/products/echo")
                big = await http.get("/api/v1/products/big?size=700000")
                after = await http.get("/api/v1/products/echo")  # the connection is still sane
        finally:
            await gateway.stop()
    assert (not_modified.status_code, not_modified.content) == (304, b"")
    assert (head.status_code, head.content) == (200, b"")
    assert len(big.content) == 700_000
    assert after.json()["path"] == "/products/echo"
    assert "server" not in after.headers
