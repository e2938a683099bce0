"""Stored passwords: Argon2id, and upgraded at login when the parameters change."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from mercato.auth.app import create_app
from mercato.auth.models import UserRow
from support.auth import app_client
from support.auth import test_settings as make_settings

pytestmark = pytest.mark.anyio

PASSWORD = "Zebra7Crossing"


async def stored_hash(app: object) -> str:
    async with app.state.context.db.unit_of_work() as uow:  # type: ignore[attr-defined]
        value: str = (await uow.session.scalars(select(UserRow.password_hash))).one()
        return value


async def test_a_login_upgrades_a_hash_made_with_older_parameters(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'auth.db'}"
    old_app = create_app(make_settings(auth_database_url=url))
    async with app_client(old_app) as client:
        await client.post(
            "/auth/register",
            json={"username": "alice", "email": "a@example.com", "password": PASSWORD},
        )
        before = await stored_hash(old_app)
    assert before.startswith("$argon2id$")
    assert PASSWORD not in before
    assert "m=1024,t=1,p=1" in before

    new_app = create_app(make_settings(auth_database_url=url, argon2_time_cost=2))
    async with app_client(new_app) as client:
        wrong = await client.post("/auth/login", json={"username": "alice", "password": "Nope1234"})
        assert wrong.status_code == 401
        assert await stored_hash(new_app) == before  # a failed login changes nothing
        ok = await client.post("/auth/login", json={"username": "alice", "password": PASSWORD})
        assert ok.status_code == 200
        after = await stored_hash(new_app)
        assert "m=1024,t=2,p=1" in after
        again = await client.post("/auth/login", json={"username": "alice", "password": PASSWORD})
        assert again.status_code == 200
