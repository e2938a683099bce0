"""Forged and misused access tokens (OWASP API2 of 2023): refused with 401 and
``WWW-Authenticate: Bearer`` at the gateway and at every service directly, since a service
reachable past the gateway must not trust a token the gateway would have refused."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from mercato.platform.security.keys import SigningKey
from support.auth import claims, forge_token, hmac_with_public_key_token, unsigned_token
from support.processes import RunningMercato
from support.security_api import API, Account, Seen, client, signing_key

#: One operation that needs a bearer token, per service (as the service itself serves it).
GUARDED = {
    "auth": ("GET", "/auth/me"),
    "users": ("GET", "/users/me"),
    "orders": ("GET", "/orders"),
    "products": ("DELETE", f"/products/{uuid.uuid4()}"),
}


def tampered(token: str, **changes: Any) -> str:
    """``token`` with its payload changed and its signature kept."""
    head, payload, signature = token.split(".")
    values = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raw = json.dumps({**values, **changes}, separators=(",", ":")).encode()
    return ".".join([head, base64.urlsafe_b64encode(raw).rstrip(b"=").decode(), signature])


def forgeries(key: SigningKey, user: Account, admin: Account) -> dict[str, str]:
    """Every forgery of the suite, for ``user`` (each would be accepted if it were valid)."""
    now = int(time.time())
    real = {"key": key.private_key, "algorithm": key.algorithm, "headers": {"kid": key.kid}}
    stranger = SigningKey.generate()
    return {
        "alg-none": unsigned_token(claims(user.id, roles=["admin"]), kid=key.kid),
        "hs256-with-public-key": hmac_with_public_key_token(claims(user.id), key=key),
        "tampered-payload": tampered(user.access_token, roles=["admin"]),
        "tampered-subject": tampered(admin.access_token, sub=user.id),
        "foreign-kid": forge_token(
            claims(user.id), key=stranger.private_key, headers={"kid": stranger.kid}
        ),
        "foreign-key-real-kid": forge_token(
            claims(user.id), key=ed25519.Ed25519PrivateKey.generate(), headers={"kid": key.kid}
        ),
        # Keys named by the token itself (ASVS 9.1.3): never fetched, never believed.
        "embedded-jwk": forge_token(
            claims(user.id),
            key=stranger.private_key,
            headers={"kid": key.kid, "jwk": stranger.public_jwk()},
        ),
        "jku": forge_token(
            claims(user.id),
            key=stranger.private_key,
            headers={"kid": stranger.kid, "jku": "https://evil.example/jwks.json"},
        ),
        "wrong-aud": forge_token(claims(user.id, aud="another-service"), **real),
        "wrong-iss": forge_token(claims(user.id, iss="https://evil.example"), **real),
        "expired": forge_token(
            claims(user.id, iat=now - 7200, nbf=now - 7200, exp=now - 3600), **real
        ),
        "future-nbf": forge_token(claims(user.id, nbf=now + 3600), **real),
        "refresh-as-access": user.refresh_token,
    }


@pytest.fixture
def forged(
    mercato: RunningMercato, customer: Account, admin: Account, secrets_seen: Seen
) -> dict[str, str]:
    tokens = forgeries(signing_key(mercato), customer, admin)
    secrets_seen.add(*tokens.values())
    return tokens


def test_the_live_key_signs_a_token_every_service_accepts(
    mercato: RunningMercato, customer: Account, secrets_seen: Seen
) -> None:
    """The control: the suite's forgeries are refused for what they forge, not for a key
    the instance does not know."""
    key = signing_key(mercato)
    token = forge_token(
        claims(customer.id), key=key.private_key, algorithm=key.algorithm, headers={"kid": key.kid}
    )
    secrets_seen.add(token)
    for service, (method, path) in GUARDED.items():
        for base in (mercato.url(service), f"{mercato.base_url}{API}"):
            answer = httpx.request(
                method, f"{base}{path}", headers={"Authorization": f"Bearer {token}"}
            )
            assert answer.status_code in {200, 403, 404}, (service, base, answer.text)  # not 401


@pytest.mark.parametrize("where", ["gateway", *GUARDED])
def test_forged_tokens_are_401_with_www_authenticate(
    mercato: RunningMercato, forged: dict[str, str], secrets_seen: Seen, where: str
) -> None:
    targets = GUARDED.items() if where == "gateway" else [(where, GUARDED[where])]
    for service, (method, path) in targets:
        base = f"{mercato.base_url}{API}" if where == "gateway" else mercato.url(service)
        with client(base, secrets_seen) as http:
            for name, token in forged.items():
                answer = http.request(method, path, headers={"Authorization": f"Bearer {token}"})
                assert answer.status_code == 401, (where, service, name, answer.text)
                assert answer.headers["www-authenticate"].startswith("Bearer"), (where, name)
                assert answer.headers["content-type"] == "application/problem+json"
