"""problem+json rendering and the request-id middleware, on a bare app (no I/O)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy.exc import OperationalError

from mercato.platform.errors import PROBLEM_JSON, Conflict, Unauthorized, install_error_handlers
from mercato.platform.middleware import RequestContextMiddleware
from mercato.platform.observability import HttpMetrics
from support.asgi import call_asgi
from support.outages import NOT_OUTAGES, OUTAGES

pytestmark = pytest.mark.anyio


class Item(BaseModel):
    name: str = Field(min_length=1)
    quantity: int = Field(ge=1)


def build_app(*, expose: bool, registry: CollectorRegistry | None = None) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app, expose_internals=expose)

    @app.get("/conflict")
    async def conflict() -> None:
        raise Conflict("The SKU is taken.", sku="A-1")

    @app.get("/private")
    async def private() -> None:
        raise Unauthorized("A bearer token is required.")

    @app.post("/items")
    async def create(item: Item) -> Item:
        return item

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals: host db-7.internal")

    @app.get("/db-down")
    async def db_down() -> None:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("db-7.internal:5432"))

    @app.get("/raise/{name}")
    async def raise_named(name: str) -> None:
        raise {**OUTAGES, **NOT_OUTAGES}[name]()

    @app.get("/items/{item_id}")
    async def read(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    metrics = HttpMetrics(registry, "test") if registry is not None else None
    app.add_middleware(
        RequestContextMiddleware, service="test", metrics=metrics, expose_errors=expose
    )
    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(expose=False), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_an_app_error_is_a_problem_with_its_status(client: httpx.AsyncClient) -> None:
    response = await client.get("/conflict", headers={"X-Request-ID": "req-1"})

    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json() == {
        "type": "urn:mercato:problem:conflict",
        "title": "Conflict",
        "status": 409,
        "detail": "The SKU is taken.",
        "request_id": "req-1",
        "sku": "A-1",
    }


async def test_unauthorized_asks_for_a_bearer_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/private")

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_validation_errors_list_each_field_without_echoing_input(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/items", json={"name": "", "quantity": 0})

    body = response.json()
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON
    assert sorted(error["loc"] for error in body["errors"]) == [
        ["body", "name"],
        ["body", "quantity"],
    ]
    assert all(set(error) == {"loc", "msg"} for error in body["errors"])


async def test_unknown_route_and_wrong_type_are_problems(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nowhere")
    wrong_type = await client.get("/items/abc")

    assert missing.status_code == 404
    assert missing.json()["title"] == "Not Found"
    assert wrong_type.status_code == 422


async def test_an_unhandled_error_is_a_500_without_internals(client: httpx.AsyncClient) -> None:
    response = await client.get("/boom", headers={"X-Request-ID": "req-500"})

    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["x-request-id"] == "req-500"
    assert response.json()["request_id"] == "req-500"
    assert "internal" not in response.text
    assert "Traceback" not in response.text


async def test_development_shows_the_traceback() -> None:
    transport = httpx.ASGITransport(app=build_app(expose=True), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/boom")

    assert response.status_code == 500
    assert any("RuntimeError" in line for line in response.json()["traceback"])


async def test_a_database_outage_is_a_503_that_names_no_host(client: httpx.AsyncClient) -> None:
    response = await client.get("/db-down")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert "db-7" not in response.text
    assert "SELECT" not in response.text


async def test_a_sane_request_id_is_kept_and_returned(client: httpx.AsyncClient) -> None:
    response = await client.get("/items/1", headers={"X-Request-ID": "abc-123.def:4"})

    assert response.headers["x-request-id"] == "abc-123.def:4"


@pytest.mark.parametrize("value", ["", "has space", "x" * 129, "-leading-dash", "semi;colon"])
async def test_an_insane_request_id_is_replaced(client: httpx.AsyncClient, value: str) -> None:
    response = await client.get("/items/1", headers={"X-Request-ID": value})

    assert response.headers["x-request-id"] != value
    assert len(response.headers["x-request-id"]) == 32


async def test_requests_are_counted_by_route_template() -> None:
    registry = CollectorRegistry()
    transport = httpx.ASGITransport(app=build_app(expose=False, registry=registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await client.get("/items/1")
        await client.get("/items/2")

    text = generate_latest(registry).decode()
    assert 'route="/items/{item_id}",service="test",status="200"} 2.0' in text


async def test_an_invented_method_cannot_mint_metric_labels() -> None:
    registry = CollectorRegistry()
    transport = httpx.ASGITransport(app=build_app(expose=False, registry=registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await client.request("BREW", "/items/1")

    text = generate_latest(registry).decode()
    assert 'method="OTHER"' in text
    assert "BREW" not in text


@pytest.mark.parametrize("name", sorted(OUTAGES))
async def test_every_kind_of_outage_is_a_503_naming_the_dependency_class(
    client: httpx.AsyncClient, name: str
) -> None:
    response = await client.get(f"/raise/{name}", headers={"X-Request-ID": "req-503"})

    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["retry-after"] == "5"
    body = response.json()
    assert body["type"] == "urn:mercato:problem:dependency-unavailable"
    assert body["request_id"] == response.headers["x-request-id"] == "req-503"
    expected = name.split(":")[0].replace("-", " ")
    assert body["dependency"] == expected
    assert expected in body["detail"]
    for secret in ("10.1.2.3", "5432", "6379", "SELECT", "middle of operation"):
        assert secret not in response.text


@pytest.mark.parametrize("name", sorted(NOT_OUTAGES))
async def test_a_bug_that_looks_like_a_dependency_error_is_still_a_500(
    client: httpx.AsyncClient, name: str
) -> None:
    response = await client.get(f"/raise/{name}")

    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM_JSON
    assert "SELECT" not in response.text


async def test_a_client_that_went_away_is_a_499_not_a_server_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A body cut off (a slow client timed out, or one that hung up) is the client's doing:
    counted and logged as 499, as nginx does, so it cannot inflate the 5xx alerts."""
    registry = CollectorRegistry()
    app = build_app(expose=False, registry=registry)
    await call_asgi(  # the client hung up before its body arrived
        app,
        "POST",
        "/items",
        headers=[(b"content-type", b"application/json"), (b"content-length", b"40")],
    )

    text = generate_latest(registry).decode()
    assert 'status="499"' in text
    assert 'status="500"' not in text
    assert "unhandled error" not in caplog.text
