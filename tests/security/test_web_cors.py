"""CORS: a foreign origin is never reflected, on the API or the storefront, neither in a
preflight nor in a simple request, and never answered with ``*`` and credentials; the
origin of CORS_ORIGINS is (OWASP API8 security misconfiguration; ASVS V3 web frontend)."""

from __future__ import annotations

import httpx
import pytest

from support.processes import RunningMercato
from support.security_web import ALLOWED_ORIGIN

pytest_plugins = ["support.security_web_plugin"]
pytestmark = pytest.mark.e2e

FOREIGN = (
    "https://evil.example",
    "null",
    "https://shop.example.evil.example",
    "https://evilshop.example",
    "http://shop.example",  # the allowed host, but over plain HTTP
    "https://shop.example:8443",
)
PATHS = ("/api/v1/products", "/api/v1/orders", "/api/v1/auth/me", "/", "/login")


def preflight(running: RunningMercato, path: str, origin: str) -> httpx.Response:
    return httpx.options(
        f"{running.base_url}{path}",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
        timeout=30,
    )


def granted(answer: httpx.Response, origin: str) -> bool:
    """Whether a browser at ``origin`` may read ``answer``."""
    allowed = answer.headers.get("access-control-allow-origin")
    return allowed == origin or allowed == "*"


@pytest.mark.parametrize("origin", FOREIGN)
@pytest.mark.parametrize("path", PATHS)
def test_a_foreign_origin_is_not_reflected(
    web_shop: RunningMercato, path: str, origin: str
) -> None:
    simple = httpx.get(f"{web_shop.base_url}{path}", headers={"Origin": origin}, timeout=30)
    asked = preflight(web_shop, path, origin)

    assert not granted(simple, origin)
    assert not granted(asked, origin)
    assert "access-control-allow-methods" not in asked.headers or asked.status_code >= 400


def test_no_answer_pairs_a_wildcard_origin_with_credentials(web_shop: RunningMercato) -> None:
    answers = [
        httpx.get(f"{web_shop.base_url}{path}", headers={"Origin": origin}, timeout=30)
        for path in PATHS
        for origin in (*FOREIGN, ALLOWED_ORIGIN)
    ]

    assert [
        answer.request.url
        for answer in answers
        if answer.headers.get("access-control-allow-origin") == "*"
        and answer.headers.get("access-control-allow-credentials") == "true"
    ] == []


def test_the_configured_origin_is_allowed(web_shop: RunningMercato) -> None:
    simple = httpx.get(
        f"{web_shop.base_url}/api/v1/products", headers={"Origin": ALLOWED_ORIGIN}, timeout=30
    )
    asked = preflight(web_shop, "/api/v1/orders", ALLOWED_ORIGIN)

    assert simple.status_code == 200
    assert simple.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "origin" in simple.headers["vary"].lower()
    assert asked.status_code == 200
    assert asked.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert asked.headers["access-control-allow-credentials"] == "true"
    assert "POST" in asked.headers["access-control-allow-methods"]
    assert "authorization" in asked.headers["access-control-allow-headers"].lower()


def test_production_does_not_reflect_a_foreign_origin_either(
    web_production: RunningMercato,
) -> None:
    simple = httpx.get(
        f"{web_production.base_url}/api/v1/products",
        headers={"Origin": "https://evil.example"},
        timeout=30,
    )
    asked = preflight(web_production, "/api/v1/orders", "https://evil.example")
    allowed = preflight(web_production, "/api/v1/orders", ALLOWED_ORIGIN)

    assert not granted(simple, "https://evil.example")
    assert not granted(asked, "https://evil.example")
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
