"""The gateway of a running `mercato up`, black-box: security headers on every answer, no
banner, offline docs, the merged OpenAPI, and a forged token refused at the door."""

from __future__ import annotations

import uuid

import httpx
import pytest

from support.auth import forge_token
from support.processes import RunningMercato
from support.production import development_only, production_requested

pytestmark = pytest.mark.e2e

SECURITY_HEADERS = (
    "x-content-type-options",
    "x-frame-options",
    "content-security-policy",
    "referrer-policy",
)
#: HSTS is production's (or HTTPS's): over plain HTTP in development it would pin localhost.
HSTS = "strict-transport-security"


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
    assert (HSTS in response.headers) is production_requested()
    assert "server" not in response.headers
    assert "unsafe-inline" not in response.headers["content-security-policy"]


@development_only
def test_the_merged_openapi_lists_every_service_under_api_v1(mercato: RunningMercato) -> None:
    document = httpx.get(f"{mercato.base_url}/openapi.json").json()
    prefixes = {path.split("/")[3] for path in document["paths"]}
    assert {"auth", "products"} <= prefixes
    assert all(path.startswith("/api/v1/") for path in document["paths"])


@development_only
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


@development_only
def test_the_docs_authorize_flow_works_through_the_gateway(mercato: RunningMercato) -> None:
    """What Swagger UI's Authorize button does: the password form at the merged schema's
    token URL, then a call with the token it got."""
    base = mercato.base_url
    document = httpx.get(f"{base}/openapi.json").json()
    flows = [
        scheme["flows"]["password"]["tokenUrl"]
        for scheme in document["components"]["securitySchemes"].values()
        if "password" in scheme.get("flows", {})
    ]
    assert flows
    assert flows[0] == "/api/v1/auth/token"
    username = f"docs{uuid.uuid4().hex[:10]}"
    password = "Docs-pass-123"
    registered = httpx.post(
        f"{base}/api/v1/auth/register",
        json={"username": username, "email": f"{username}@example.com", "password": password},
    )
    assert registered.status_code == 201, registered.text
    token = httpx.post(f"{base}{flows[0]}", data={"username": username, "password": password})
    assert token.status_code == 200, token.text
    me = httpx.get(
        f"{base}/api/v1/auth/me",
        headers={"Authorization": f"Bearer {token.json()['access_token']}"},
    )
    assert me.status_code == 200
    assert me.json()["username"] == username


@pytest.mark.integration
def test_the_gateway_rows_on_postgres_redis_and_rabbitmq(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_url: str,
    redis_url: str,
    redis_prefix: str,
    broker_server_url: str,
) -> None:
    from support.processes import mercato_up
    from support.servers import free_port

    ports: set[int] = set()
    while len(ports) < 5:
        ports.add(free_port())
    names = ["gateway", "auth", "users", "products", "orders"]
    env = {
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "BROKER_URL": broker_server_url,
        "MESSAGING_EXCHANGE": f"mercato.test.{redis_prefix}",
        "RATE_LIMIT_PREFIX": redis_prefix,
        "RATE_LIMIT_API": "4/minute",
    }
    with mercato_up(
        tmp_path_factory.mktemp("gateway-e2e-servers"),
        dict(zip(names, sorted(ports), strict=True)),
        env=env,
    ) as running:
        base = running.base_url
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["ratelimit"] == "ok"
        answers = [httpx.get(f"{base}/api/v1/products") for _ in range(5)]
        assert [a.status_code for a in answers] == [200, 200, 200, 200, 429]
        assert answers[0].headers["ratelimit-limit"] == "4"
        assert "retry-after" in answers[-1].headers
        for answer in answers:
            assert all(name in answer.headers for name in SECURITY_HEADERS)
        metrics = httpx.get(f"{base}/metrics").text
        assert 'gateway_upstream_requests_total{status="200",upstream="products"} 4.0' in metrics
        assert 'gateway_refused_total{reason="rate-limited"} 1.0' in metrics
