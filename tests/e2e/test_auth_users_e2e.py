"""Every auth and users row of API.md through the gateway of a real `mercato up`
(embedded defaults: SQLite files, memory cache and broker, keys generated in DATA_DIR)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from support.auth import bearer, claims, forge_token, unsigned_token
from support.processes import RunningMercato, mercato_up
from support.production import development_only
from support.servers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

ADMIN, ADMIN_PASSWORD = "rootadmin", "R00tAdminPass"
PASSWORD = "Zebra7Crossing"
#: Every token handed out in this module, for the log check that runs last.
ISSUED: list[str] = []


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMercato]:
    """Its own `mercato up`: these tests spend the login limits of 127.0.0.1."""
    ports: set[int] = set()
    while len(ports) < 5:
        ports.add(free_port())
    names = ["gateway", "auth", "users", "products", "orders"]
    env = {"MERCATO_ADMIN_USERNAME": ADMIN, "MERCATO_ADMIN_PASSWORD": ADMIN_PASSWORD}
    with mercato_up(
        tmp_path_factory.mktemp("auth-e2e"), dict(zip(names, sorted(ports), strict=True)), env=env
    ) as running:
        yield running


@pytest.fixture
async def api(shop: RunningMercato) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{shop.base_url}/api/v1", timeout=30) as client:
        yield client


def unique(prefix: str = "user") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


async def sign_up(api: httpx.AsyncClient, **extra: Any) -> dict[str, Any]:
    username = unique()
    body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
    registered = await api.post("/auth/register", json={**body, **extra})
    assert registered.status_code == 201, registered.text
    pair = await api.post("/auth/login", json={"username": username, "password": PASSWORD})
    assert pair.status_code == 200, pair.text
    ISSUED.extend([pair.json()["access_token"], pair.json()["refresh_token"]])
    return {"username": username, "id": registered.json()["id"], **pair.json()}


async def test_register_validation_and_duplicates(api: httpx.AsyncClient) -> None:
    user = await sign_up(api)
    again = await api.post(
        "/auth/register",
        json={"username": user["username"].upper(), "email": "x@example.com", "password": PASSWORD},
    )
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    invalid = await api.post(
        "/auth/register",
        json={
            "username": unique(),
            "email": "a@example.com",
            "password": PASSWORD,
            "roles": ["admin"],
        },
    )
    assert invalid.status_code == 422
    weak = await api.post(
        "/auth/register",
        json={"username": unique(), "email": "b@example.com", "password": "Password1"},
    )
    assert weak.status_code == 422


async def test_a_profile_exists_within_one_second_of_registration(api: httpx.AsyncClient) -> None:
    username = unique()
    body = {"username": username, "email": f"{username}@example.com", "password": PASSWORD}
    assert (await api.post("/auth/register", json=body)).status_code == 201
    registered_at = time.monotonic()
    token = (
        await api.post("/auth/login", json={"username": username, "password": PASSWORD})
    ).json()["access_token"]
    while True:
        response = await api.get("/users/me", headers=bearer(token))
        if response.status_code == 200 or time.monotonic() - registered_at > 1.0:
            break
        await asyncio.sleep(0.05)
    assert response.status_code == 200
    assert response.json()["username"] == username


async def test_login_failures_look_alike_and_the_token_form_works(api: httpx.AsyncClient) -> None:
    user = await sign_up(api)
    wrong = await api.post(
        "/auth/login", json={"username": user["username"], "password": "Nope12345"}
    )
    unknown = await api.post("/auth/login", json={"username": unique(), "password": "Nope12345"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"]
    assert wrong.headers["www-authenticate"] == "Bearer"
    form = await api.post("/auth/token", data={"username": user["username"], "password": PASSWORD})
    assert form.status_code == 200
    assert form.json()["token_type"] == "bearer"


async def test_me_refresh_reuse_and_logout(api: httpx.AsyncClient) -> None:
    user = await sign_up(api)
    me = await api.get("/auth/me", headers=bearer(user["access_token"]))
    assert me.status_code == 200
    assert me.json()["username"] == user["username"]
    assert (await api.get("/auth/me")).status_code == 401
    rotated = await api.post("/auth/refresh", json={"refresh_token": user["refresh_token"]})
    assert rotated.status_code == 200
    assert (
        await api.post("/auth/refresh", json={"refresh_token": user["refresh_token"]})
    ).status_code == 401
    dead = await api.post("/auth/refresh", json={"refresh_token": rotated.json()["refresh_token"]})
    assert dead.status_code == 401
    other = await api.post("/auth/login", json={"username": user["username"], "password": PASSWORD})
    pair = other.json()
    out = await api.post(
        "/auth/logout",
        json={"refresh_token": pair["refresh_token"]},
        headers=bearer(pair["access_token"]),
    )
    assert out.status_code == 204
    assert (
        await api.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    ).status_code == 401


@development_only
async def test_the_gateway_docs_authorize_with_the_token_form(shop: RunningMercato) -> None:
    async with httpx.AsyncClient(base_url=shop.base_url, timeout=30) as client:
        schema = (await client.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    password_flows = [
        s["flows"]["password"]["tokenUrl"]
        for s in schemes.values()
        if "password" in s.get("flows", {})
    ]
    assert password_flows
    assert set(password_flows) == {"/api/v1/auth/token"}


async def test_the_jwks_is_public_keys_only(api: httpx.AsyncClient) -> None:
    jwks = (await api.get("/auth/.well-known/jwks.json")).json()
    assert jwks["keys"]
    assert all(not {"d", "p", "q"} & set(key) for key in jwks["keys"])


async def test_profiles_me_patch_and_visibility(api: httpx.AsyncClient) -> None:
    alice, bob = await sign_up(api, age=30), await sign_up(api)
    headers = bearer(alice["access_token"])
    patched = await api.patch("/users/me", json={"full_name": "Alice", "age": 31}, headers=headers)
    assert patched.status_code == 200
    assert (patched.json()["full_name"], patched.json()["age"]) == ("Alice", 31)
    assert (
        await api.patch("/users/me", json={"email": "e@example.com"}, headers=headers)
    ).status_code == 422
    own = await api.get(f"/users/{alice['id']}", headers=headers)
    assert own.status_code == 200
    hidden = await api.get(f"/users/{alice['id']}", headers=bearer(bob["access_token"]))
    assert hidden.status_code == 404
    assert (await api.get("/users", headers=headers)).status_code == 403


async def test_the_bootstrap_admin_lists_users(api: httpx.AsyncClient) -> None:
    await sign_up(api)
    login = await api.post("/auth/login", json={"username": ADMIN, "password": ADMIN_PASSWORD})
    assert login.status_code == 200
    listing = await api.get("/users?limit=2", headers=bearer(login.json()["access_token"]))
    assert listing.status_code == 200
    body = listing.json()
    assert body["limit"] == 2
    assert body["total"] >= 2


@pytest.mark.parametrize(
    "token",
    [
        unsigned_token(),
        forge_token(),  # signed with a key the running system never trusted
        forge_token(claims(aud="elsewhere")),
    ],
    ids=["alg-none", "unknown-key", "wrong-aud"],
)
async def test_forged_tokens_are_refused_by_the_gateway_and_the_services(
    api: httpx.AsyncClient, shop: RunningMercato, token: str
) -> None:
    assert (await api.get("/users/me", headers=bearer(token))).status_code == 401
    async with httpx.AsyncClient(base_url=shop.url("users"), timeout=10) as direct:
        response = await direct.get("/users/me", headers=bearer(token))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_a_service_called_directly_verifies_real_tokens_via_the_jwks(
    api: httpx.AsyncClient, shop: RunningMercato
) -> None:
    user = await sign_up(api)
    async with httpx.AsyncClient(base_url=shop.url("users"), timeout=10) as direct:
        assert (await direct.get("/users/me")).status_code == 401
        for _ in range(20):
            response = await direct.get("/users/me", headers=bearer(user["access_token"]))
            if response.status_code != 404:  # the profile may still be on its way
                break
            await asyncio.sleep(0.05)
    assert response.status_code == 200


async def test_the_sixth_login_for_one_username_is_429(api: httpx.AsyncClient) -> None:
    username = unique()
    body = {"username": username, "password": "Wr0ngGuess1"}
    answers = [(await api.post("/auth/login", json=body)).status_code for _ in range(6)]
    assert answers == [401] * 5 + [429]


def test_no_password_or_token_in_the_logs(shop: RunningMercato) -> None:
    log = shop.log()
    assert PASSWORD not in log
    assert ADMIN_PASSWORD not in log
    assert len(ISSUED) >= 10
    for token in ISSUED:
        assert token not in log
        assert token.rsplit(".", 1)[-1] not in log


@pytest.mark.integration
async def test_the_auth_and_users_rows_on_postgres_redis_and_rabbitmq(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_url: str,
    redis_url: str,
    redis_prefix: str,
    broker_server_url: str,
) -> None:
    ports: set[int] = set()
    while len(ports) < 5:
        ports.add(free_port())
    names = ["gateway", "auth", "users", "products", "orders"]
    env = {
        "DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "BROKER_URL": broker_server_url,
        "MESSAGING_EXCHANGE": f"mercato.test.{redis_prefix}",
        "RATE_LIMIT_PREFIX": redis_prefix,
        "MERCATO_ADMIN_USERNAME": ADMIN,
        "MERCATO_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    with mercato_up(
        tmp_path_factory.mktemp("auth-e2e-servers"),
        dict(zip(names, sorted(ports), strict=True)),
        env=env,
    ) as running:
        async with httpx.AsyncClient(base_url=f"{running.base_url}/api/v1", timeout=30) as api:
            user = await sign_up(api, age=40)
            for _ in range(100):
                profile = await api.get("/users/me", headers=bearer(user["access_token"]))
                if profile.status_code == 200:
                    break
                await asyncio.sleep(0.05)
            assert profile.status_code == 200
            assert profile.json()["age"] == 40
            patched = await api.patch(
                "/users/me", json={"full_name": "On Servers"}, headers=bearer(user["access_token"])
            )
            assert patched.json()["full_name"] == "On Servers"
            rotated = await api.post("/auth/refresh", json={"refresh_token": user["refresh_token"]})
            assert rotated.status_code == 200
            reused = await api.post("/auth/refresh", json={"refresh_token": user["refresh_token"]})
            assert reused.status_code == 401
            admin = await api.post(
                "/auth/login", json={"username": ADMIN, "password": ADMIN_PASSWORD}
            )
            listing = await api.get("/users", headers=bearer(admin.json()["access_token"]))
            assert listing.status_code == 200
            assert user["id"] in [item["id"] for item in listing.json()["items"]]
            body = {"username": unique(), "password": "Wr0ngGuess1"}
            answers = [(await api.post("/auth/login", json=body)).status_code for _ in range(6)]
            assert answers == [401] * 5 + [429]
        assert user["refresh_token"] not in running.log()
