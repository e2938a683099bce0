"""The production profile end to end, through the gateway, as an operator runs it:
`mercato migrate`, then `mercato up` with ENVIRONMENT=production and what it insists on.

Probes answer (an orchestrator sees the system healthy), /metrics answers a scraper on
loopback, the docs are closed, the API works, no answer names an internal host or port;
and a start without `mercato migrate` says so on /readyz, naming each service."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from support.processes import RunningMercato, free_ports, mercato_up
from support.production import mercato_up_live, production_env

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

ADMIN, ADMIN_PASSWORD = "prodadmin", "Pr0d-Admin-Pass"
BACKENDS = ("auth", "users", "products", "orders")


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMercato]:
    tmp_path = tmp_path_factory.mktemp("production")
    env = {
        **production_env(),
        "MERCATO_ADMIN_USERNAME": ADMIN,
        "MERCATO_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    with mercato_up(tmp_path, free_ports(), env=env) as running:  # migrates first (production)
        yield running


@pytest.fixture
async def api(production: RunningMercato) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{production.base_url}/api/v1", timeout=30) as client:
        yield client


def internal_addresses(running: RunningMercato) -> list[str]:
    return [f":{port}" for name, port in running.ports.items() if name != "gateway"]


def test_the_probes_answer_and_the_docs_are_closed(production: RunningMercato) -> None:
    base = production.base_url
    health = httpx.get(f"{base}/healthz")
    ready = httpx.get(f"{base}/readyz")
    metrics = httpx.get(f"{base}/metrics")  # from loopback: an allowed network
    assert health.status_code == 200
    assert ready.status_code == 200, ready.text
    assert set(BACKENDS) <= set(ready.json()["checks"])
    assert metrics.status_code == 200
    assert (
        "gateway_upstream_requests_total" in metrics.text or "http_requests_total" in metrics.text
    )
    for path in ("/docs", "/openapi.json"):
        closed = httpx.get(f"{base}{path}")
        assert closed.status_code == 404
        assert closed.headers["content-type"] == "application/problem+json"
    for name in BACKENDS:
        service = httpx.get(f"{production.url(name)}/readyz")
        assert service.status_code == 200, service.text
        assert service.json()["checks"]["schema"] == "ok"


def test_production_answers_carry_hsts_and_no_banner(production: RunningMercato) -> None:
    response = httpx.get(f"{production.base_url}/api/v1/products")
    assert response.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    assert response.headers["x-frame-options"] == "DENY"
    assert "server" not in response.headers


def test_a_foreign_host_is_refused_with_a_request_id(production: RunningMercato) -> None:
    response = httpx.get(f"{production.base_url}/api/v1/products", headers={"Host": "evil.example"})
    assert response.status_code == 400
    assert response.json()["request_id"] == response.headers["x-request-id"]


async def test_register_login_and_a_product_read_through_the_gateway(
    api: httpx.AsyncClient,
) -> None:
    username = f"prod{uuid.uuid4().hex[:10]}"
    password = "Prod-pass-123"
    registered = await api.post(
        "/auth/register",
        json={"username": username, "email": f"{username}@example.com", "password": password},
    )
    assert registered.status_code == 201, registered.text
    login = await api.post("/auth/login", json={"username": username, "password": password})
    assert login.status_code == 200, login.text
    me = await api.get(
        "/auth/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"}
    )
    assert me.status_code == 200
    assert me.json()["username"] == username

    admin = await api.post("/auth/login", json={"username": ADMIN, "password": ADMIN_PASSWORD})
    assert admin.status_code == 200, admin.text
    body = {
        "sku": f"PROD-{uuid.uuid4().hex[:8]}",
        "name": "Prod Lamp",
        "price": "24.50",
        "stock": 3,
    }
    created = await api.post(
        "/products", json=body, headers={"Authorization": f"Bearer {admin.json()['access_token']}"}
    )
    assert created.status_code == 201, created.text
    read = await api.get(f"/products/{created.json()['id']}")
    assert read.status_code == 200
    assert read.json()["sku"] == body["sku"]


async def test_no_answer_names_an_internal_host_or_port(
    production: RunningMercato, api: httpx.AsyncClient
) -> None:
    answers = [
        await api.get("/products/"),  # the trailing-slash redirect
        await api.get("/products/no-such-id"),
        await api.get("/nowhere"),
        await api.post("/auth/login", json={}),
        await api.get("/auth/me", headers={"Authorization": "Bearer not.a.token"}),
        await api.post("/orders", json={"items": []}),
    ]
    ready = await api.get(f"{production.base_url}/readyz")
    redirect = answers[0]
    assert redirect.status_code == 307
    assert redirect.headers["location"] == "/api/v1/products"
    internal = internal_addresses(production)
    for answer in [*answers, ready]:
        shown = answer.text + " ".join(f"{k}: {v}" for k, v in answer.headers.items())
        leaks = [address for address in internal if address in shown]
        assert leaks == [], f"{answer.request.url} -> {answer.status_code} names {leaks}"
        assert not re.search(r"127\.0\.0\.1:\d+", shown)


def test_a_start_without_migrate_is_unready_naming_each_service(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tmp_path = tmp_path_factory.mktemp("production-unmigrated")
    with mercato_up_live(tmp_path, free_ports(), production_env()) as running:
        ready = httpx.get(f"{running.base_url}/readyz")
        services = {name: httpx.get(f"{running.url(name)}/readyz") for name in BACKENDS}
        listing = httpx.get(f"{running.base_url}/api/v1/products")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    for name in BACKENDS:
        assert "schema" in checks[name], checks
        answer = services[name]
        assert answer.status_code == 503
        assert answer.json()["service"] == name
        assert f"the {name} schema is behind its migrations" in answer.json()["checks"]["schema"]
    assert listing.status_code == 503
