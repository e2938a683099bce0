"""The gateway's front door in every profile: probes in production, /metrics only for the
allowed networks, the Host checks with a request id, HSTS only where it belongs, and no
answer that names an internal host or port."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mercato.serving import app_factory
from mercato.settings import Settings, load_settings
from support.asgi import call_asgi
from support.auth import test_settings, trusting_overrides
from support.gateway import gateway_settings, running
from support.servers import free_port
from support.standin import StandIn, serve

pytestmark = pytest.mark.anyio


def production_settings(routes: dict[str, Any], **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        **trusting_overrides(),
        "environment": "production",
        "secret_key": "s" * 40,
        "allowed_hosts": "gateway.test",
        "gateway_routes": routes,
        **overrides,
    }
    return load_settings(env_file=None, **values)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"docs_enabled": False}],
    ids=["production", "docs-off"],
)
async def test_probes_answer_when_the_docs_are_off(overrides: dict[str, Any]) -> None:
    standin = StandIn()
    async with serve(standin) as upstream:
        settings = (
            production_settings({"products": upstream.url})
            if not overrides
            else gateway_settings({"products": upstream.url}, **overrides)
        )
        async with running(settings) as (_, http):
            answers = {path: await http.get(path) for path in ("/healthz", "/readyz", "/metrics")}
            docs = await http.get("/docs")
            api = await http.get("/api/v1/products/echo")
    assert {path: answer.status_code for path, answer in answers.items()} == {
        "/healthz": 200,
        "/readyz": 200,
        "/metrics": 200,
    }
    assert answers["/readyz"].json()["checks"]["products"] == "ok"
    assert docs.status_code == 404
    assert api.status_code == 200


@pytest.mark.parametrize(
    ("client", "forwarded_for", "trusted", "status"),
    [
        ("127.0.0.1", None, "", 200),
        ("10.1.2.3", None, "", 200),
        ("203.0.113.9", None, "", 404),
        ("203.0.113.9", "10.0.0.1", "", 404),  # an untrusted peer cannot claim an address
        ("10.0.0.5", "203.0.113.9", "10.0.0.5", 404),  # a trusted proxy relays a public client
        ("10.0.0.5", "10.0.0.7", "10.0.0.5", 200),
    ],
)
async def test_metrics_answer_only_the_allowed_networks(
    client: str, forwarded_for: str | None, trusted: str, status: int
) -> None:
    settings = gateway_settings({"products": "http://127.0.0.1:9"}, trusted_proxies=trusted)
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    async with running(settings, client=(client, 40000)) as (_, http):
        metrics = await http.get("/metrics", headers=headers)
        unknown = await http.get("/no-such-page")
    assert metrics.status_code == status
    if status == 404:  # indistinguishable from a path that does not exist
        assert metrics.headers["content-type"] == "application/problem+json"
        assert metrics.json() | {"request_id": None} == unknown.json() | {"request_id": None}


async def test_metrics_networks_are_a_setting() -> None:
    settings = gateway_settings(
        {"products": "http://127.0.0.1:9"}, metrics_allowed_networks="192.0.2.0/24"
    )
    async with running(settings, client=("192.0.2.10", 40000)) as (_, http):
        allowed = await http.get("/metrics")
    async with running(settings, client=("127.0.0.1", 40000)) as (_, http):
        refused = await http.get("/metrics")
    assert (allowed.status_code, refused.status_code) == (200, 404)


@pytest.mark.parametrize(
    "headers",
    [
        [("Host", "evil.example")],
        [("Host", "gateway.test"), ("Host", "evil.example")],
        [("Host", "gateway.test"), ("Host", "gateway.test")],
    ],
    ids=["foreign", "two-different", "two-same"],
)
async def test_a_bad_host_is_400_problem_with_a_request_id(headers: list[tuple[str, str]]) -> None:
    standin = StandIn()
    async with serve(standin) as upstream:
        settings = production_settings({"products": upstream.url})
        async with running(settings) as (app, _):
            answers = [await raw_get(app, path, headers) for path in ("/api/v1/products/echo", "/")]
    for status, response_headers, body in answers:
        assert status == 400
        assert response_headers["content-type"] == "application/problem+json"
        assert body["request_id"]
        assert response_headers["x-request-id"] == body["request_id"]
    assert standin.received == []


async def test_two_host_headers_are_refused_even_when_any_host_is_allowed() -> None:
    async with running(gateway_settings({"products": "http://127.0.0.1:9"})) as (app, _):
        status, _, body = await raw_get(app, "/healthz", [("Host", "a"), ("Host", "b")])
    assert status == 400
    assert body["request_id"]


async def raw_get(
    app: Any, path: str, headers: list[tuple[str, str]]
) -> tuple[int, dict[str, str], Any]:
    """One GET straight through ASGI, with exactly ``headers`` (httpx would merge Hosts)."""
    sent = await call_asgi(
        app,
        "GET",
        path,
        headers=[(k.lower().encode(), v.encode()) for k, v in headers],
        messages=[{"type": "http.request", "body": b"", "more_body": False}],
        server=("gateway.test", 80),
    )
    start = sent[0]
    response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], response_headers, json.loads(body)


@pytest.mark.parametrize(
    ("url", "headers", "overrides", "expected"),
    [
        ("http://gateway.test/healthz", {}, {}, False),
        ("https://gateway.test/healthz", {}, {}, True),
        ("http://gateway.test/healthz", {"X-Forwarded-Proto": "https"}, {}, False),
        (
            "http://gateway.test/healthz",
            {"X-Forwarded-Proto": "https"},
            {"trusted_proxies": "127.0.0.0/8"},
            True,
        ),
        ("http://gateway.test/api/v1/products/echo", {}, {"production": True}, True),
    ],
    ids=["plain-http", "https", "untrusted-proto", "trusted-proto", "production"],
)
async def test_hsts_only_over_https_or_in_production(
    url: str, headers: dict[str, str], overrides: dict[str, Any], expected: bool
) -> None:
    standin = StandIn()
    async with serve(standin) as upstream:
        routes = {"products": upstream.url}
        settings = (
            production_settings(routes)
            if overrides.pop("production", False)
            else gateway_settings(routes, **overrides)
        )
        async with running(settings) as (_, http):
            response = await http.get(url, headers={"Host": "gateway.test", **headers})
    assert response.status_code == 200
    assert ("strict-transport-security" in response.headers) is expected
    assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("path", ["/api/v1/products/echo", "/healthz"])
async def test_headers_past_the_limit_are_431_problem_and_never_forwarded(path: str) -> None:
    standin = StandIn()
    async with serve(standin) as upstream:
        settings = gateway_settings({"products": upstream.url}, max_header_bytes=4096)
        async with running(settings) as (_, http):
            large = await http.get(path, headers={"X-Padding": "a" * 5000})
            within = await http.get(path, headers={"X-Padding": "a" * 3000})
    assert large.status_code == 431
    assert large.headers["content-type"] == "application/problem+json"
    assert large.json()["request_id"] == large.headers["x-request-id"]
    assert large.headers["x-frame-options"] == "DENY"
    assert within.status_code == 200
    assert len(standin.received) == (1 if path.startswith("/api/") else 0)


def redirecting(location: str) -> Any:
    """An upstream whose every answer carries ``Location: location``: 307 to a GET, 201 to
    a POST (a created resource)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send(
            {
                "type": "http.response.start",
                "status": 201 if scope["method"] == "POST" else 307,
                "headers": [(b"location", location.encode()), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    return app


@pytest.mark.parametrize(
    ("location", "public"),
    [
        ("{upstream}/products", "/api/v1/products"),
        ("{upstream}/products/7?x=1#f", "/api/v1/products/7?x=1#f"),
        ("http://10.0.0.12:8003/products/7", "/api/v1/products/7"),
        ("http://localhost:8003/products", "/api/v1/products"),
        ("/products/7", "/api/v1/products/7"),
        ("/api/v1/products/7", "/api/v1/products/7"),
        ("7", "7"),
        ("https://shop.example/welcome", "https://shop.example/welcome"),
    ],
)
async def test_a_location_never_names_an_internal_host(location: str, public: str) -> None:
    port = free_port()
    app = redirecting(location.format(upstream=f"http://127.0.0.1:{port}"))
    async with (
        serve(app, port) as upstream,
        running(gateway_settings({"products": upstream.url})) as (_, http),
    ):
        redirect = await http.get("/api/v1/products/")
        created = await http.post("/api/v1/products/")
    assert (redirect.status_code, created.status_code) == (307, 201)
    assert redirect.headers["location"] == public
    assert created.headers["location"] == public


async def test_the_products_trailing_slash_redirect_stays_public() -> None:
    """The finding: `GET /api/v1/products/` answered `Location: http://127.0.0.1:8003/products`."""
    products = app_factory("products")(test_settings())
    async with (
        serve(products) as upstream,
        running(gateway_settings({"products": upstream.url})) as (_, http),
    ):
        response = await http.get("/api/v1/products/")
        followed = await http.get(response.headers["location"])
    assert response.status_code == 307
    assert response.headers["location"] == "/api/v1/products"
    assert str(upstream.port) not in response.text
    assert followed.status_code == 200


async def test_upstream_failures_name_the_service_never_its_address() -> None:
    dead = "http://127.0.0.1:9"
    settings = gateway_settings({"products": dead}, upstream_fail_threshold=1, upstream_retries=0)
    async with running(settings) as (_, http):
        unreachable = await http.get("/api/v1/products/echo")
        open_circuit = await http.get("/api/v1/products/echo")
        ready = await http.get("/readyz")
    assert (unreachable.status_code, open_circuit.status_code, ready.status_code) == (502, 503, 503)
    for answer in (unreachable, open_circuit, ready):
        assert "products" in answer.text
        assert "127.0.0.1" not in answer.text
        assert ":9" not in answer.text
