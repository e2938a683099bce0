"""The gateway of a running `mercato up`, black-box: security headers on every answer, no
banner, offline docs, the merged OpenAPI, and a forged token refused at the door."""

from __future__ import annotations

import httpx
import pytest

from support.auth import forge_token
from support.processes import RunningMercato

pytestmark = pytest.mark.e2e

SECURITY_HEADERS = (
    "x-content-type-options",
    "x-frame-options",
    "strict-transport-security",
    "content-security-policy",
    "referrer-policy",
)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("GET", "/api/v1/products"),
        ("GET", "/api/v1/products/no-such-id"),
        ("GET", "/api/v1/auth/me"),
        ("POST", "/api/v1/auth/login"),
        ("GET", "/api/v1/nowhere"),
        ("GET", "/no-such-page"),
    ],
)
def test_every_gateway_answer_carries_the_security_headers(
    mercato: RunningMercato, method: str, path: str
) -> None:
    response = httpx.request(
        method, f"{mercato.base_url}{path}", json={} if method == "POST" else None
    )
    missing = [name for name in SECURITY_HEADERS if name not in response.headers]
    assert missing == [], f"{method} {path} -> {response.status_code} lacks {missing}"
    assert "server" not in response.headers
    assert "unsafe-inline" not in response.headers["content-security-policy"]


def test_the_merged_openapi_lists_every_service_under_api_v1(mercato: RunningMercato) -> None:
    document = httpx.get(f"{mercato.base_url}/openapi.json").json()
    prefixes = {path.split("/")[3] for path in document["paths"]}
    assert {"auth", "products"} <= prefixes
    assert all(path.startswith("/api/v1/") for path in document["paths"])


def test_docs_load_their_assets_from_the_gateway(mercato: RunningMercato) -> None:
    bundle = httpx.get(f"{mercato.base_url}/docs/static/swagger/swagger-ui-bundle.js")
    assert bundle.status_code == 200
    assert "cdn" not in httpx.get(f"{mercato.base_url}/docs").text.lower()


def test_a_forged_token_is_refused_at_the_gateway(mercato: RunningMercato) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    token = forge_token(key=ed25519.Ed25519PrivateKey.generate())
    response = httpx.get(
        f"{mercato.base_url}/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
