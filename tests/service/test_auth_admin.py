"""Bootstrapping an administrator: from the environment at start-up, and with
``mercato create-admin`` (which prompts for the password)."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from typer.testing import CliRunner

from mercato.auth.app import create_app
from mercato.cli import app as cli
from support.auth import app_client
from support.auth import test_settings as make_settings

pytestmark = pytest.mark.anyio

ADMIN_PASSWORD = "B00tstrapAdmin"


async def roles_after_login(client: object, username: str, password: str) -> list[str]:
    response = await client.post(  # type: ignore[attr-defined]
        "/auth/login", json={"username": username, "password": password}
    )
    assert response.status_code == 200, response.text
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    roles: list[str] = claims["roles"]
    return roles


async def test_the_environment_bootstraps_an_admin() -> None:
    settings = make_settings(MERCATO_ADMIN_USERNAME="root1", MERCATO_ADMIN_PASSWORD=ADMIN_PASSWORD)
    async with app_client(create_app(settings)) as client:
        assert "admin" in await roles_after_login(client, "root1", ADMIN_PASSWORD)
        me = await client.post(
            "/auth/login", json={"username": "root1", "password": ADMIN_PASSWORD}
        )
        assert me.status_code == 200


async def test_bootstrap_promotes_an_existing_user_and_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}"
    async with app_client(create_app(make_settings(auth_database_url=url))) as client:
        await client.post(
            "/auth/register",
            json={"username": "carol", "email": "carol@example.com", "password": "Carol5Secret"},
        )
        assert await roles_after_login(client, "carol", "Carol5Secret") == ["customer"]
    settings = make_settings(
        auth_database_url=url,
        MERCATO_ADMIN_USERNAME="carol",
        MERCATO_ADMIN_PASSWORD=ADMIN_PASSWORD,
    )
    for _ in range(2):  # a restart changes nothing more
        async with app_client(create_app(settings)) as client:
            # promoted, and the password stays the user's own
            assert await roles_after_login(client, "carol", "Carol5Secret") == ["admin", "customer"]


async def test_no_admin_is_made_without_both_settings() -> None:
    settings = make_settings(MERCATO_ADMIN_USERNAME="root1")
    async with app_client(create_app(settings)) as client:
        response = await client.post(
            "/auth/login", json={"username": "root1", "password": ADMIN_PASSWORD}
        )
        assert response.status_code == 401


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ENVIRONMENT", "development")
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("ARGON2_MEMORY_COST", "1024")
    monkeypatch.setenv("ARGON2_TIME_COST", "1")
    monkeypatch.setenv("ARGON2_PARALLELISM", "1")
    return tmp_path


def test_create_admin_prompts_for_the_password_and_creates_the_admin(workdir: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli, ["create-admin", "boss"], input=f"{ADMIN_PASSWORD}\n{ADMIN_PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    assert "Created administrator boss" in result.output
    assert ADMIN_PASSWORD not in result.output
    again = runner.invoke(
        cli, ["create-admin", "boss"], input=f"{ADMIN_PASSWORD}\n{ADMIN_PASSWORD}\n"
    )
    assert again.exit_code == 0
    assert "Promoted administrator boss" in again.output
    assert (workdir / "var" / "auth.db").is_file()


def test_create_admin_refuses_a_weak_password(workdir: Path) -> None:
    result = CliRunner().invoke(cli, ["create-admin", "boss"], input="password\npassword\n")
    assert result.exit_code == 2
    assert not (workdir / "var" / "auth.db").exists()


def test_create_admin_takes_no_password_option(workdir: Path) -> None:
    result = CliRunner().invoke(cli, ["create-admin", "boss", "--password", ADMIN_PASSWORD])
    assert result.exit_code != 0
    assert not (workdir / "var" / "auth.db").exists()


def test_create_admin_refuses_a_bad_username(workdir: Path) -> None:
    result = CliRunner().invoke(cli, ["create-admin", "no way"], input="x\nx\n")
    assert result.exit_code == 2
