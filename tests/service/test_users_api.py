"""The users rows of API.md: profiles made from ``user.registered``, read and edited.

Auth and users run in one process on the memory broker, as under ``mercato up``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from mercato.auth.app import create_app as create_auth
from mercato.messaging import SharedMessaging
from mercato.messaging.brokers.memory import MemoryBroker
from mercato.users.app import create_app as create_users
from support.auth import admin_headers, app_client, auth_headers, bearer
from support.auth import test_settings as make_settings
from support.messaging import drain

pytestmark = pytest.mark.anyio

PASSWORD = "Tr1ckyHorse"


class Apps:
    def __init__(self, auth: httpx.AsyncClient, users: httpx.AsyncClient, apps: list[Any]) -> None:
        self.auth, self.users, self.apps = auth, users, apps

    async def sign_up(self, username: str, **extra: Any) -> dict[str, str]:
        """Register, wait for the profile, log in: the user's id and access token."""
        body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
        registered = await self.auth.post("/auth/register", json={**body, **extra})
        assert registered.status_code == 201, registered.text
        await drain(*self.apps)
        pair = (
            await self.auth.post("/auth/login", json={"username": username, "password": PASSWORD})
        ).json()
        return {"id": registered.json()["id"], "token": pair["access_token"]}


@pytest.fixture
async def apps() -> AsyncIterator[Apps]:
    settings, broker = make_settings(), MemoryBroker()
    auth_app = create_auth(settings, shared=SharedMessaging(broker=broker))
    users_app = create_users(settings, shared=SharedMessaging(broker=broker))
    async with app_client(auth_app) as auth, app_client(users_app) as users:
        yield Apps(auth, users, [auth_app, users_app])


async def test_a_profile_is_made_from_the_registration(apps: Apps) -> None:
    alice = await apps.sign_up("alice", full_name="Alice Liddell", age=30)
    response = await apps.users.get("/users/me", headers=bearer(alice["token"]))
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "id": alice["id"],
        "username": "alice",
        "email": "alice@example.com",
        "full_name": "Alice Liddell",
        "age": 30,
        "created_at": body["created_at"],
    }


async def test_a_redelivered_registration_makes_no_second_profile(apps: Apps) -> None:
    from mercato.auth.contracts import UserRegistered
    from mercato.messaging import Envelope
    from mercato.users.service import create_profile

    alice = await apps.sign_up("alice")
    users_app = apps.apps[1]
    event = Envelope[UserRegistered](
        type="user.registered",
        source="auth",
        data=UserRegistered(
            user_id=alice["id"],
            username="alice",
            email="changed@example.com",
            created_at="2026-01-01T00:00:00Z",  # type: ignore[arg-type]
        ),
    )
    async with users_app.state.context.db.unit_of_work() as uow:
        await create_profile(event, uow)
        await uow.commit()
    body = (await apps.users.get("/users/me", headers=bearer(alice["token"]))).json()
    assert body["email"] == "alice@example.com"


async def test_me_without_a_token_is_401(apps: Apps) -> None:
    response = await apps.users.get("/users/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_me_before_the_profile_exists_is_404(apps: Apps) -> None:
    response = await apps.users.get("/users/me", headers=auth_headers("no-profile-yet"))
    assert response.status_code == 404


async def test_patch_me_changes_full_name_and_age(apps: Apps) -> None:
    alice = await apps.sign_up("alice", age=30)
    response = await apps.users.patch(
        "/users/me", json={"full_name": "Alice L.", "age": 31}, headers=bearer(alice["token"])
    )
    assert response.status_code == 200
    assert (response.json()["full_name"], response.json()["age"]) == ("Alice L.", 31)
    again = (await apps.users.get("/users/me", headers=bearer(alice["token"]))).json()
    assert (again["full_name"], again["age"]) == ("Alice L.", 31)


async def test_patch_me_changes_only_the_fields_sent(apps: Apps) -> None:
    alice = await apps.sign_up("alice", full_name="Alice", age=30)
    response = await apps.users.patch("/users/me", json={"age": 40}, headers=bearer(alice["token"]))
    assert (response.json()["full_name"], response.json()["age"]) == ("Alice", 40)


@pytest.mark.parametrize(
    "body",
    [
        {"email": "evil@example.com"},
        {"username": "root"},
        {"roles": ["admin"]},
        {"id": "someone-else"},
        {"age": -1},
        {"age": 151},
        {"age": "old"},
        {"age": "30"},  # types are strict
        {"age": True},
        {"age": 31.5},
        {"full_name": "x" * 201},
        {"full_name": "Alice\x00"},
        {"full_name": 7},
    ],
)
async def test_patch_me_refuses_other_fields_and_bad_values(
    apps: Apps, body: dict[str, Any]
) -> None:
    alice = await apps.sign_up("alice", age=30)
    response = await apps.users.patch("/users/me", json=body, headers=bearer(alice["token"]))
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    after = (await apps.users.get("/users/me", headers=bearer(alice["token"]))).json()
    assert (after["email"], after["username"], after["age"]) == ("alice@example.com", "alice", 30)


async def test_a_user_reads_their_own_profile_by_id(apps: Apps) -> None:
    alice = await apps.sign_up("alice")
    response = await apps.users.get(f"/users/{alice['id']}", headers=bearer(alice["token"]))
    assert response.status_code == 200
    assert response.json()["username"] == "alice"


async def test_another_users_profile_is_404_not_403(apps: Apps) -> None:
    alice = await apps.sign_up("alice")
    bob = await apps.sign_up("bob")
    response = await apps.users.get(f"/users/{alice['id']}", headers=bearer(bob["token"]))
    assert response.status_code == 404
    missing = await apps.users.get("/users/does-not-exist", headers=bearer(bob["token"]))
    assert response.json()["detail"] == missing.json()["detail"]


async def test_an_admin_reads_any_profile(apps: Apps) -> None:
    alice = await apps.sign_up("alice")
    response = await apps.users.get(f"/users/{alice['id']}", headers=admin_headers())
    assert response.status_code == 200


async def test_the_list_is_for_admins_only(apps: Apps) -> None:
    alice = await apps.sign_up("alice")
    assert (await apps.users.get("/users", headers=bearer(alice["token"]))).status_code == 403
    assert (await apps.users.get("/users")).status_code == 401


async def test_the_list_is_paged(apps: Apps) -> None:
    names = [f"user{number}" for number in range(5)]
    for name in names:
        await apps.sign_up(name)
    first = (await apps.users.get("/users?limit=2", headers=admin_headers())).json()
    assert (first["total"], first["limit"], first["offset"]) == (5, 2, 0)
    assert [item["username"] for item in first["items"]] == names[:2]
    rest = (await apps.users.get("/users?limit=10&offset=2", headers=admin_headers())).json()
    assert [item["username"] for item in rest["items"]] == names[2:]
    default = (await apps.users.get("/users", headers=admin_headers())).json()
    assert default["limit"] == 20


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "offset=-1", "limit=x"])
async def test_out_of_range_paging_is_422(apps: Apps, query: str) -> None:
    response = await apps.users.get(f"/users?{query}", headers=admin_headers())
    assert response.status_code == 422
