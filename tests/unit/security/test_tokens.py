"""Access tokens: issued tokens verify; every forged or stale variant is refused."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mercato.platform.security.keys import KeySet, SigningKey, parse_public_keys
from mercato.platform.security.tokens import (
    InvalidToken,
    StaticKeys,
    TokenIssuer,
    TokenVerifier,
)
from support.auth import (
    AUDIENCE,
    ISSUER,
    TEST_JWKS,
    TEST_KEY,
    TEST_KEYS,
    claims,
    forge_token,
    issue_token,
    unsigned_token,
)

pytestmark = pytest.mark.anyio


def verifier(**options: Any) -> TokenVerifier:
    return TokenVerifier(StaticKeys(TEST_JWKS["keys"]), issuer=ISSUER, audience=AUDIENCE, **options)


async def refused(token: str, **options: Any) -> str:
    with pytest.raises(InvalidToken) as caught:
        await verifier(**options).verify(token)
    return caught.value.reason


async def test_an_issued_token_verifies_into_a_principal() -> None:
    token = issue_token("user-42", roles=["admin", "customer"])
    principal = await verifier().verify(token)
    assert principal.user_id == "user-42"
    assert principal.roles == frozenset({"admin", "customer"})
    assert principal.is_admin
    assert principal.expires_at > datetime.now(UTC)


def test_issued_tokens_carry_every_required_claim_and_the_kid() -> None:
    issued = TokenIssuer(TEST_KEYS, issuer=ISSUER, audience=AUDIENCE).issue("u", ["admin"])
    header = jwt.get_unverified_header(issued.token)
    assert header["kid"] == TEST_KEY.kid
    assert header["alg"] == "EdDSA"
    body = jwt.decode(issued.token, options={"verify_signature": False})
    assert set(body) == {"sub", "roles", "exp", "iat", "nbf", "jti", "iss", "aud"}
    assert body["exp"] - body["iat"] == 900  # 15 minutes by default
    assert issued.expires_in == 900


async def test_alg_none_is_refused() -> None:
    assert await refused(unsigned_token()) == "algorithm not allowed"


async def test_hs256_signed_with_the_public_key_is_refused() -> None:
    public_pem = TEST_KEY.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = base64.urlsafe_b64encode(
        json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": TEST_KEY.kid}).encode()
    ).rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=")
    import hashlib
    import hmac

    signature = hmac.new(public_pem, header + b"." + payload, hashlib.sha256).digest()
    token = b".".join([header, payload, base64.urlsafe_b64encode(signature).rstrip(b"=")])
    assert await refused(token.decode()) == "algorithm not allowed"


async def test_a_token_claiming_rs256_for_an_eddsa_key_is_refused() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = forge_token(key=rsa_key, algorithm="RS256")
    assert await refused(token) == "algorithm does not match the key"


async def test_a_wrong_audience_is_refused() -> None:
    assert await refused(forge_token(claims(aud="another-api"))) == "wrong audience"


async def test_a_wrong_issuer_is_refused() -> None:
    assert await refused(forge_token(claims(iss="https://evil.example"))) == "wrong issuer"


async def test_an_unknown_kid_is_refused() -> None:
    assert await refused(forge_token(headers={"kid": "made-up"})) == "unknown key id"


async def test_a_missing_kid_is_refused() -> None:
    token = jwt.encode(claims(), TEST_KEY.private_key, algorithm="EdDSA", headers={"typ": "at+jwt"})
    assert await refused(token) == "no key id"


async def test_a_token_signed_by_another_key_with_our_kid_is_refused() -> None:
    other = ed25519.Ed25519PrivateKey.generate()
    assert await refused(forge_token(key=other)) == "bad signature"


async def test_a_tampered_payload_is_refused() -> None:
    head, _, signature = issue_token("user-1").split(".")
    payload = base64.urlsafe_b64encode(
        json.dumps(claims("user-1", roles=["admin"])).encode()
    ).rstrip(b"=")
    assert await refused(f"{head}.{payload.decode()}.{signature}") == "bad signature"


async def test_an_expired_token_is_refused_past_the_leeway() -> None:
    now = int(time.time())
    token = forge_token(claims(iat=now - 1000, nbf=now - 1000, exp=now - 31))
    assert await refused(token) == "expired"


async def test_an_expiry_within_the_leeway_is_accepted() -> None:
    now = int(time.time())
    token = forge_token(claims(iat=now - 900, nbf=now - 900, exp=now - 10))
    principal = await verifier().verify(token)
    assert principal.user_id == "user-1"


async def test_a_future_nbf_is_refused() -> None:
    now = int(time.time())
    assert await refused(forge_token(claims(nbf=now + 120))) == "not yet valid"


@pytest.mark.parametrize("claim", ["sub", "roles", "exp", "iat", "nbf", "jti", "iss", "aud"])
async def test_a_missing_claim_is_refused(claim: str) -> None:
    reason = await refused(forge_token(claims(**{claim: None})))
    assert reason in {f"missing claim {claim}", "wrong audience", "wrong issuer"}


async def test_a_token_of_another_type_is_refused() -> None:
    assert await refused(forge_token(headers={"typ": "JWT"})) == "not an access token"


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "Bearer x", "e30.e30.e30"])
async def test_garbage_is_refused(garbage: str) -> None:
    await refused(garbage)


@pytest.mark.parametrize(
    "times",
    [
        {"exp": 10**20},
        {"exp": float("inf")},
        {"exp": -(10**20)},
        {"nbf": float("inf")},
        {"iat": float("-inf")},
        {"exp": 1e300},
    ],
)
async def test_absurd_times_are_refused_not_crashed_on(times: dict[str, Any]) -> None:
    """A signed token whose times no datetime can hold is refused (a 401, not a 500)."""
    await refused(forge_token(claims(**times)))


async def test_roles_must_be_a_list_of_strings() -> None:
    assert await refused(forge_token(claims(roles="admin"))) == "invalid roles"


async def test_verified_tokens_are_cached_until_they_expire() -> None:
    class CountingKeys(StaticKeys):
        calls = 0

        async def get(self, kid: str) -> jwt.PyJWK | None:
            CountingKeys.calls += 1
            return await super().get(kid)

    clock = [time.time()]
    cached = TokenVerifier(
        CountingKeys(TEST_JWKS["keys"]),
        issuer=ISSUER,
        audience=AUDIENCE,
        clock=lambda: clock[0],
    )
    token = issue_token("user-1", ttl=60)
    await cached.verify(token)
    await cached.verify(token)
    assert CountingKeys.calls == 1
    clock[0] += 61  # past its expiry the cache forgets it and verifies it afresh
    await cached.verify(token)
    assert CountingKeys.calls == 2


async def test_the_token_cache_is_bounded() -> None:
    small = verifier(cache_size=2)
    for user in ("a", "b", "c"):
        await small.verify(issue_token(user))
    assert len(small._cache) == 2


def test_the_leeway_cannot_exceed_30_seconds() -> None:
    with pytest.raises(ValueError, match="30 seconds"):
        verifier(leeway=60)


async def test_several_keys_verify_while_only_the_first_signs() -> None:
    new_key = SigningKey.generate()
    rotated = KeySet([new_key, TEST_KEY])
    both = TokenVerifier(StaticKeys(rotated.jwks()["keys"]), issuer=ISSUER, audience=AUDIENCE)
    old_token = issue_token("user-1")
    new_token = TokenIssuer(rotated, issuer=ISSUER, audience=AUDIENCE).issue("user-2").token
    assert jwt.get_unverified_header(new_token)["kid"] == new_key.kid
    assert (await both.verify(old_token)).user_id == "user-1"
    assert (await both.verify(new_token)).user_id == "user-2"


def test_the_jwks_holds_public_parameters_only() -> None:
    rsa_key = SigningKey.from_private_key(
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    jwks = KeySet([TEST_KEY, rsa_key]).jwks()
    private_params = {"d", "p", "q", "dp", "dq", "qi"}
    for jwk in jwks["keys"]:
        assert not private_params & set(jwk)
        assert jwk["use"] == "sig"
    assert [jwk["alg"] for jwk in jwks["keys"]] == ["EdDSA", "RS256"]


async def test_rs256_keys_sign_and_verify() -> None:
    key = SigningKey.from_private_key(
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    keys = KeySet([key])
    token = TokenIssuer(keys, issuer=ISSUER, audience=AUDIENCE).issue("user-rsa").token
    checker = TokenVerifier(StaticKeys(keys.jwks()["keys"]), issuer=ISSUER, audience=AUDIENCE)
    assert (await checker.verify(token)).user_id == "user-rsa"


def test_pem_round_trip_keeps_keys_and_order() -> None:
    keys = KeySet([SigningKey.generate(), TEST_KEY])
    again = KeySet.from_pem(keys.to_pem())
    assert [k.kid for k in again.keys] == [k.kid for k in keys.keys]


def test_public_pem_keys_are_read_as_jwks() -> None:
    pem = TEST_KEY.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert parse_public_keys(pem.decode()) == TEST_JWKS["keys"]
    assert parse_public_keys(json.dumps(TEST_JWKS)) == TEST_JWKS["keys"]


def test_short_rsa_keys_are_refused() -> None:
    from mercato.platform.security.keys import KeyConfigError

    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the weak key under test
    with pytest.raises(KeyConfigError):
        SigningKey.from_private_key(weak)
