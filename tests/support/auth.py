"""Tokens for tests, without a running auth service.

Every app built from :func:`test_settings` (or from settings carrying
:data:`TEST_PRIVATE_KEYS_PEM` as ``jwt_private_keys``) signs and verifies with one fixed
test key, so a token from :func:`issue_token` is accepted by every service of the test,
and tokens the auth service issues there are accepted by the others::

    from support.auth import auth_headers, test_settings

    settings = test_settings()                      # testing profile + the test key
    app = create_app(settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://test"
    ) as client:
        await client.get("/users/me", headers=auth_headers("user-1"))
        await client.get("/users", headers=auth_headers("admin-1", roles=["admin"]))

``app_client(app)`` does the lifespan and client part of the above in one line (its
socket peer is ``203.0.113.7`` unless ``client=`` says otherwise). Settings built another
way can trust the key with ``**trusting_overrides()``. For refusal tests,
:func:`forge_token` signs arbitrary claims and headers (with the test key or another),
:func:`unsigned_token` makes an ``alg: none`` token and :func:`hmac_with_public_key_token`
the HS256-keyed-with-the-public-key confusion.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519
from fastapi import FastAPI

from mercato.platform.security.keys import KeySet, SigningKey
from mercato.platform.security.tokens import TOKEN_TYPE, TokenIssuer
from mercato.settings import Settings, load_settings

ISSUER = "mercato"
AUDIENCE = "mercato"

TEST_KEY = SigningKey.from_private_key(
    ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"mercato test key").digest())
)
TEST_KEYS = KeySet([TEST_KEY])
TEST_PRIVATE_KEYS_PEM = TEST_KEYS.to_pem()
TEST_JWKS = TEST_KEYS.jwks()


def trusting_overrides() -> dict[str, Any]:
    """Settings overrides that make an app sign and verify with the test key."""
    return {"jwt_private_keys": TEST_PRIVATE_KEYS_PEM}


def test_settings(**overrides: Any) -> Settings:
    """Testing-profile settings (in-memory SQLite, memory cache) that trust the test key."""
    values: dict[str, Any] = {**trusting_overrides(), **overrides}
    return load_settings(env_file=None, environment="testing", **values)


test_settings.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def issue_token(user_id: str | None = None, roles: Sequence[str] = (), *, ttl: int = 900) -> str:
    """A valid access token for ``user_id`` (a new UUID by default) with ``roles``."""
    issuer = TokenIssuer(TEST_KEYS, issuer=ISSUER, audience=AUDIENCE, ttl=ttl)
    return issuer.issue(user_id or str(uuid.uuid4()), roles).token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def auth_headers(user_id: str | None = None, roles: Sequence[str] = ()) -> dict[str, str]:
    """``Authorization`` headers with a fresh valid token."""
    return bearer(issue_token(user_id, roles))


def admin_headers(user_id: str | None = None) -> dict[str, str]:
    return auth_headers(user_id, roles=["admin"])


def claims(user_id: str = "user-1", **changes: Any) -> dict[str, Any]:
    """Valid access-token claims, with ``changes`` applied (``None`` removes a claim)."""
    now = int(time.time())
    values: dict[str, Any] = {
        "sub": user_id,
        "roles": [],
        "iat": now,
        "nbf": now,
        "exp": now + 900,
        "jti": uuid.uuid4().hex,
        "iss": ISSUER,
        "aud": AUDIENCE,
    }
    values.update(changes)
    return {key: value for key, value in values.items() if value is not None}


def forge_token(
    claim_values: dict[str, Any] | None = None,
    *,
    key: Any = None,
    algorithm: str = "EdDSA",
    headers: dict[str, Any] | None = None,
) -> str:
    """Sign ``claim_values`` (default: valid claims) with ``key`` (default: the test key)
    and ``headers`` (default: the test key's ``kid`` and the access-token ``typ``)."""
    header_values = {"kid": TEST_KEY.kid, "typ": TOKEN_TYPE, **(headers or {})}
    return jwt.encode(
        claim_values if claim_values is not None else claims(),
        key if key is not None else TEST_KEY.private_key,
        algorithm=algorithm,
        headers=header_values,
    )


def unsigned_token(claim_values: dict[str, Any] | None = None, **header: Any) -> str:
    """A token with ``alg: none`` and no signature."""
    import base64

    def part(value: dict[str, Any]) -> str:
        raw = json.dumps(value, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = {"alg": "none", "typ": TOKEN_TYPE, "kid": TEST_KEY.kid, **header}
    return f"{part(head)}.{part(claim_values or claims())}."


@asynccontextmanager
async def app_client(
    app: FastAPI, *, client: tuple[str, int] = ("203.0.113.7", 50000)
) -> AsyncIterator[httpx.AsyncClient]:
    """Enter ``app``'s lifespan and answer an ``httpx`` client talking to it in-process,
    from the socket address ``client``."""
    transport = httpx.ASGITransport(app, client=client)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as http,
    ):
        yield http


def hmac_with_public_key_token(
    claim_values: dict[str, Any] | None = None, *, key: SigningKey = TEST_KEY
) -> str:
    """The algorithm-confusion forgery: HS256 keyed with ``key``'s *public* PEM (default:
    the test key's)."""
    import base64
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization

    public_pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def part(value: bytes) -> bytes:
        return base64.urlsafe_b64encode(value).rstrip(b"=")

    header = part(json.dumps({"alg": "HS256", "typ": TOKEN_TYPE, "kid": key.kid}).encode())
    payload = part(json.dumps(claim_values or claims()).encode())
    signature = hmac.new(public_pem, header + b"." + payload, hashlib.sha256).digest()
    return b".".join([header, payload, part(signature)]).decode()
