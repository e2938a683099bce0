"""``CurrentUser`` / ``AdminUser`` on a service built by ``create_service_app``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from fastapi import APIRouter

from mercato.platform.app import create_service_app
from mercato.platform.security.dependencies import AdminUser, CurrentUser
from support.auth import (
    admin_headers,
    auth_headers,
    bearer,
    claims,
    forge_token,
    hmac_with_public_key_token,
    unsigned_token,
)
from support.auth import test_settings as make_settings

pytestmark = pytest.mark.anyio

router = APIRouter()


@router.get("/whoami")
async def whoami(user: CurrentUser) -> dict[str, object]:
    return {"id": user.user_id, "roles": sorted(user.roles)}


@router.get("/admin-only")
async def admin_only(user: AdminUser) -> dict[str, str]:
    return {"id": user.user_id}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_service_app(
        make_settings(), "users", title="t", routers=[router], uses_database=False
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client,
    ):
        yield client


async def test_a_valid_token_identifies_the_user(client: httpx.AsyncClient) -> None:
    response = await client.get("/whoami", headers=auth_headers("user-7", roles=["customer"]))
    assert response.status_code == 200
    assert response.json() == {"id": "user-7", "roles": ["customer"]}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        bearer("not-a-token"),
        bearer(unsigned_token()),
        bearer(forge_token(claims(aud="elsewhere"))),
        bearer(forge_token(claims(exp=1, iat=0, nbf=0))),
        bearer(hmac_with_public_key_token()),
        bearer(forge_token(headers={"kid": "unknown-kid"})),
        bearer(forge_token(claims(nbf=int(time.time()) + 3600))),
        bearer(forge_token(claims(iss="https://evil.example"))),
        bearer(forge_token(key=ed25519.Ed25519PrivateKey.generate())),
    ],
    ids=[
        "none",
        "basic",
        "empty",
        "garbage",
        "alg-none",
        "wrong-aud",
        "expired",
        "hs256-public-key",
        "unknown-kid",
        "future-nbf",
        "wrong-iss",
        "wrong-signature",
    ],
)
async def test_missing_or_invalid_tokens_get_401_problem_with_www_authenticate(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get("/whoami", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 401


async def test_a_user_without_the_admin_role_gets_403(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin-only", headers=auth_headers("user-7"))
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"


async def test_an_admin_passes(client: httpx.AsyncClient) -> None:
    response = await client.get("/admin-only", headers=admin_headers("boss"))
    assert response.status_code == 200
    assert response.json() == {"id": "boss"}


async def test_the_schema_names_the_admin_role_of_admin_operations_only(
    client: httpx.AsyncClient,
) -> None:
    """The security suite derives its function-level checks from these scopes."""
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert paths["/admin-only"]["get"]["security"] == [
        {"bearer": ["admin"]},
        {"bearerToken": ["admin"]},
    ]
    assert paths["/whoami"]["get"]["security"] == [{"bearer": []}, {"bearerToken": []}]


async def test_an_unreachable_jwks_answers_503_not_401() -> None:
    import socket

    from mercato.settings import load_settings

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = load_settings(
        env_file=None, environment="testing", jwks_url=f"http://127.0.0.1:{port}/jwks.json"
    )
    app = create_service_app(settings, "users", title="t", routers=[router], uses_database=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as client,
    ):
        response = await client.get("/whoami", headers=auth_headers("user-7"))
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"


async def test_docs_take_a_pasted_token_beside_the_password_flow(
    client: httpx.AsyncClient,
) -> None:
    """``bearerToken`` is only in the document (no second dependency to solve per request)."""
    schemes = (await client.get("/openapi.json")).json()["components"]["securitySchemes"]
    assert list(schemes) == ["bearer", "bearerToken"]
    assert schemes["bearer"]["type"] == "oauth2"
    assert schemes["bearerToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "Paste an access token.",
    }
