"""Serverless: every HTTP service's Lambda handler invoked with API Gateway events (HTTP API
payload 2.0 and REST API), on /healthz and one real route each; and the gateway's handler
proxying to a products service that runs for real."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mercato import lambda_handlers
from support.deploy_platforms import clean_environment, running
from support.servers import free_port

HANDLERS: dict[str, Callable[[Any, Any], dict[str, Any]]] = {
    "gateway": lambda_handlers.gateway,
    "auth": lambda_handlers.auth,
    "users": lambda_handlers.users,
    "products": lambda_handlers.products,
    "orders": lambda_handlers.orders,
}
CLIENT = "203.0.113.9"
HOST = "abc123.execute-api.eu-west-1.amazonaws.com"
#: What a context object carries that Mangum passes on (as ``aws.context``).
CONTEXT = SimpleNamespace(
    function_name="mercato-products",
    aws_request_id="c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
    get_remaining_time_in_millis=lambda: 30_000,
)


def http_api_event(path: str, method: str = "GET") -> dict[str, Any]:
    """An API Gateway HTTP API event, payload format 2.0."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "host": HOST,
            "accept": "application/json",
            "x-forwarded-for": CLIENT,
            "x-forwarded-proto": "https",
            "x-forwarded-port": "443",
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": HOST,
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": CLIENT,
                "userAgent": "pytest",
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "$default",
            "stage": "$default",
            "time": "01/Dec/2026:12:00:00 +0000",
            "timeEpoch": 1796126400000,
        },
        "isBase64Encoded": False,
    }


def rest_api_event(path: str, method: str = "GET") -> dict[str, Any]:
    """An API Gateway REST API proxy event (payload 1.0), stage ``prod``."""
    headers = {"Host": HOST, "Accept": "application/json", "X-Forwarded-For": CLIENT}
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/prod{path}",
            "stage": "prod",
            "accountId": "123456789012",
            "apiId": "abc123",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "identity": {"sourceIp": CLIENT, "userAgent": "pytest"},
        },
        "body": None,
        "isBase64Encoded": False,
    }


EVENTS = {"http-api": http_api_event, "rest-api": rest_api_event}


def body(answer: dict[str, Any]) -> Any:
    raw = answer["body"]
    if answer.get("isBase64Encoded"):
        raw = base64.b64decode(raw).decode()
    return json.loads(raw)


def header(answer: dict[str, Any], name: str) -> str:
    headers = {key.lower(): value for key, value in (answer.get("headers") or {}).items()}
    multi = {key.lower(): value for key, value in (answer.get("multiValueHeaders") or {}).items()}
    if name in headers:
        return str(headers[name])
    return ", ".join(multi.get(name, []))


@pytest.fixture
def function_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The settings a function is given (its data under a temporary directory, as under
    Lambda's /tmp), a cold start for each test, and the apps and event loop ended after."""
    for name, value in clean_environment(tmp_path, {"ENVIRONMENT": "development"}).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    lambda_handlers.shutdown()
    yield tmp_path
    lambda_handlers.shutdown()
    with contextlib.suppress(RuntimeError):  # no loop: the start failed before it
        asyncio.get_event_loop_policy().get_event_loop().close()
    asyncio.set_event_loop(None)


@pytest.mark.parametrize("service", sorted(HANDLERS))
def test_every_handler_answers_healthz(function_environment: Path, service: str) -> None:
    for kind, event in EVENTS.items():
        answer = HANDLERS[service](event("/healthz"), CONTEXT)
        assert answer["statusCode"] == 200, (kind, answer)
        assert body(answer)["status"] == "ok"
        assert header(answer, "content-type").startswith("application/json")
        assert header(answer, "x-request-id")


@pytest.mark.parametrize("kind", sorted(EVENTS))
def test_the_products_handler_serves_the_catalogue(function_environment: Path, kind: str) -> None:
    # Development seeds the demo catalogue into DATA_DIR on the first invocation's start-up;
    # the second invocation reads it from there.
    first = lambda_handlers.products(EVENTS[kind]("/products"), CONTEXT)
    assert first["statusCode"] == 200, first
    again = lambda_handlers.products(EVENTS[kind]("/products"), CONTEXT)
    assert again["statusCode"] == 200
    listed = body(again)
    assert listed["items"]
    assert {"id", "name", "price"} <= set(listed["items"][0])
    assert header(again, "content-type") == "application/json"


@pytest.mark.parametrize(
    ("service", "path", "status"),
    [
        ("auth", "/auth/.well-known/jwks.json", 200),
        ("users", "/users/me", 401),  # a real route, refused without a token
        ("orders", "/orders", 401),
    ],
)
def test_each_service_handler_serves_its_routes(
    function_environment: Path, service: str, path: str, status: int
) -> None:
    answer = HANDLERS[service](http_api_event(path), CONTEXT)
    assert answer["statusCode"] == status, answer
    if status == 200:
        assert body(answer)["keys"]
    else:
        assert header(answer, "content-type") == "application/problem+json"
        assert body(answer)["status"] == status


def test_metrics_are_not_for_api_gateways_clients(function_environment: Path) -> None:
    answer = lambda_handlers.products(http_api_event("/metrics"), CONTEXT)
    assert answer["statusCode"] == 404


def test_a_refused_setting_fails_the_cold_start(
    function_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mercato.platform.settings import ConfigError

    monkeypatch.setenv("ENVIRONMENT", "production")
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        lambda_handlers.products(http_api_event("/healthz"), CONTEXT)


@pytest.mark.deploy
def test_the_gateway_handler_proxies_to_a_running_service(
    function_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    env = clean_environment(
        function_environment / "products",
        {"ENVIRONMENT": "development", "PRODUCTS_PORT": str(port)},
    )
    (function_environment / "products").mkdir()
    monkeypatch.setenv("PRODUCTS_URL", f"http://127.0.0.1:{port}")
    with running(
        "mercato serve products",
        env,
        function_environment / "products",
        function_environment / "products.log",
    ) as products:
        products.wait_for(f"http://127.0.0.1:{port}/readyz")
        answer = lambda_handlers.gateway(http_api_event("/api/v1/products"), CONTEXT)
        assert answer["statusCode"] == 200, answer
        assert body(answer)["items"]
        assert header(answer, "ratelimit-limit")
