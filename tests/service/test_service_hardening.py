"""What every backend service holds against a caller that reaches its port directly: a
request body limit, and an ``X-Forwarded-For`` believed only from its own gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from mercato.platform.settings import ServiceName
from mercato.serving import app_factory
from support.auth import admin_headers, app_client, test_settings

pytestmark = pytest.mark.anyio

#: One write route of each service, with a body that is valid but for its size.
WRITES: dict[ServiceName, tuple[str, str, dict[str, Any]]] = {
    "auth": ("POST", "/auth/register", {"username": "bob", "email": "b@example.com"}),
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
