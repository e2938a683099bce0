"""What every backend service holds against a caller that reaches its port directly: a
request body limit, and an ``X-Forwarded-For`` believed only from its own gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from mercato.serving import app_factory
from mercato.settings import ServiceName
from support.auth import admin_headers, app_client, test_settings

pytestmark = pytest.mark.anyio

#: One write route of each service, with a body that is valid but for its size.
WRITES: dict[ServiceName, tuple[str, str, dict[str, Any]]] = {
    "auth": (
        "POST",
        "/auth/register",
        {"username": "bob", "email": "b@example.com", "password": "Tr1ckyHorse"},
    ),
    "users": ("PATCH", "/users/me", {"full_name": "Bob"}),
    "products": ("POST", "/products", {"sku": "BIG", "name": "Big", "price": "1.00"}),
    "orders": ("POST", "/orders", {"items": [{"product_id": "p1", "quantity": 1}]}),
}
LIMIT = 2048


@pytest.mark.parametrize("service", sorted(WRITES))
async def test_every_service_refuses_a_body_over_its_limit(service: ServiceName) -> None:
    method, path, body = WRITES[service]
    padded = {**body, "padding": "x" * LIMIT}  # too large before it is even parsed
    app = app_factory(service)(test_settings(service_max_body_size=LIMIT))
    async with app_client(app) as client:
        response = await client.request(method, path, json=padded, headers=admin_headers())
        assert response.status_code == 413, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["request_id"] == response.headers["x-request-id"]

        async def chunked() -> AsyncIterator[bytes]:
            yield b'{"padding": "'
            for _ in range(LIMIT // 100 + 1):
                yield b"x" * 100
            yield b'"}'

        streamed = await client.request(
            method,
            path,
            content=chunked(),
            headers={**admin_headers(), "content-type": "application/json"},
        )
        assert streamed.status_code == 413, streamed.text
        assert streamed.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("service", sorted(WRITES))
async def test_deeply_nested_json_is_a_400_in_every_service(service: ServiceName) -> None:
    method, path, _ = WRITES[service]
    deep = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    app = app_factory(service)(test_settings())
    async with app_client(app) as client:
        response = await client.request(
            method,
            path,
            content=deep,
            headers={**admin_headers(), "content-type": "application/json"},
        )
        assert response.status_code == 400, response.text
        assert response.headers["content-type"] == "application/problem+json"


#: A route of each service that reads its database.
READS: dict[ServiceName, str] = {
    "auth": "/auth/me",
    "users": "/users/me",
    "products": "/products",
    "orders": "/orders",
}


@pytest.mark.parametrize("service", sorted(READS))
async def test_with_the_database_refusing_connections_every_service_answers_503(
    service: ServiceName,
) -> None:
    from support.servers import free_port

    dead = f"postgresql+asyncpg://mercato@127.0.0.1:{free_port()}/mercato"
    settings = test_settings(database_url=dead, auto_migrate=False)
    async with app_client(app_factory(service)(settings)) as client:
        for method, path, body in (("GET", READS[service], None), WRITES[service]):
            # (an Idempotency-Key makes orders claim it in its database first)
            headers = {**admin_headers(), "Idempotency-Key": "k-1"}
            response = await client.request(method, path, json=body, headers=headers)
            assert response.status_code == 503, (path, response.text)
            assert response.headers["retry-after"] == "5"
            assert response.json()["dependency"] == "database"
            assert "127.0.0.1" not in response.text


@pytest.mark.parametrize(
    ("service", "method", "path", "form"),
    [
        ("users", "GET", "/users/a%00b", None),
        ("orders", "GET", "/orders/a%00b", None),
        ("orders", "POST", "/orders/a%00b/cancel", None),
        ("auth", "POST", "/auth/token", {"username": "a\x00b", "password": "Tr1ckyHorse"}),
        ("auth", "POST", "/auth/token", {"username": "alice", "password": "Tr1cky\x00Horse"}),
    ],
)
async def test_a_nul_in_a_path_or_form_parameter_is_a_422(
    service: ServiceName, method: str, path: str, form: dict[str, str] | None
) -> None:
    """On PostgreSQL such a parameter reached the query and failed there (a 500)."""
    async with app_client(app_factory(service)(test_settings())) as client:
        response = await client.request(method, path, data=form, headers=admin_headers())
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("service", sorted(WRITES))
async def test_a_signed_token_with_an_absurd_expiry_is_a_401(service: ServiceName) -> None:
    from support.auth import bearer, claims, forge_token

    token = forge_token(claims(exp=10**20, roles=["admin"]))
    method, path, body = WRITES[service]
    async with app_client(app_factory(service)(test_settings())) as client:
        response = await client.request(method, path, json=body, headers=bearer(token))
        if service == "auth":  # registering needs no token: ask who the token is instead
            response = await client.get("/auth/me", headers=bearer(token))
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"
