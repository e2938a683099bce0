"""Where the signing keys come from, per environment; production never makes one up."""

from __future__ import annotations

import stat
from pathlib import Path

import jwt
import pytest

from mercato.auth.app import create_app
from mercato.platform.security.keys import KeySet, SigningKey
from mercato.platform.security.tokens import signing_keys, token_verifier
from mercato.platform.settings import ConfigError
from mercato.settings import load_settings
from support.auth import TEST_KEY, TEST_PRIVATE_KEYS_PEM, app_client, issue_token
from support.auth import test_settings as make_settings

pytestmark = pytest.mark.anyio


def test_development_generates_a_private_key_file_once(tmp_path: Path) -> None:
    settings = load_settings(env_file=None, environment="development", data_dir=tmp_path)
    first = signing_keys(settings)
    key_file = tmp_path / "jwt-keys.pem"
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert signing_keys(settings).signing.kid == first.signing.kid  # reused, not regenerated


def test_production_without_keys_refuses(tmp_path: Path) -> None:
    settings = load_settings(env_file=None, environment="production", data_dir=tmp_path)
    with pytest.raises(ConfigError, match="JWT_PRIVATE_KEYS"):
        signing_keys(settings)
    assert not list(tmp_path.iterdir())


def test_production_with_a_missing_key_file_refuses(tmp_path: Path) -> None:
    settings = load_settings(
        env_file=None, environment="production", jwt_private_keys_file=tmp_path / "nope.pem"
    )
    with pytest.raises(ConfigError, match="does not exist"):
        signing_keys(settings)


def test_production_takes_keys_from_settings_in_order() -> None:
    newer = SigningKey.generate()
    pem = KeySet([newer, TEST_KEY]).to_pem()
    keys = signing_keys(
        load_settings(env_file=None, environment="production", jwt_private_keys=pem)
    )
    assert [key.kid for key in keys.keys] == [newer.kid, TEST_KEY.kid]
    assert keys.signing.kid == newer.kid


def test_garbage_keys_are_a_config_error() -> None:
    settings = load_settings(
        env_file=None,
        jwt_private_keys="-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----\n",
    )
    with pytest.raises(ConfigError):
        signing_keys(settings)


async def test_the_auth_service_does_not_start_in_production_without_keys(tmp_path: Path) -> None:
    settings = load_settings(
        env_file=None,
        environment="production",
        auth_database_url="sqlite+aiosqlite:///:memory:",
        auto_migrate=True,
    )
    app = create_app(settings)
    with pytest.raises(ConfigError):
        async with app.router.lifespan_context(app):
            pass


async def test_a_service_trusts_public_keys_given_as_settings() -> None:
    import json

    from support.auth import TEST_JWKS

    settings = load_settings(
        env_file=None, environment="testing", jwt_public_keys=json.dumps(TEST_JWKS)
    )
    verifier = token_verifier(settings)
    assert (await verifier.verify(issue_token("user-9"))).user_id == "user-9"


async def test_rotation_keeps_old_tokens_valid_and_signs_with_the_new_key() -> None:
    old_token = issue_token("user-1")
    newer = SigningKey.generate()
    rotated = KeySet([newer, KeySet.from_pem(TEST_PRIVATE_KEYS_PEM).signing]).to_pem()
    async with app_client(create_app(make_settings(jwt_private_keys=rotated))) as client:
        # accepted (404: no such account here), not refused (401)
        old = await client.get("/auth/me", headers={"Authorization": f"Bearer {old_token}"})
        assert old.status_code == 404
        jwks = (await client.get("/auth/.well-known/jwks.json")).json()
        assert [key["kid"] for key in jwks["keys"]] == [newer.kid, TEST_KEY.kid]
        account = {"username": "alice", "email": "a@example.com", "password": "Zebra7Crossing"}
        await client.post("/auth/register", json=account)
        login = await client.post(
            "/auth/login", json={"username": "alice", "password": "Zebra7Crossing"}
        )
        assert jwt.get_unverified_header(login.json()["access_token"])["kid"] == newer.kid
