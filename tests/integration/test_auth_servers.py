"""Auth and users on the servers topology: PostgreSQL, Redis and RabbitMQ.

Rate limits are shared by every instance through Redis; refresh rotation holds under
concurrency on PostgreSQL; a profile appears from the event carried by RabbitMQ.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as redis

from mercato.auth.app import create_app as create_auth
from mercato.users.app import create_app as create_users
from support.auth import app_client, bearer
from support.auth import test_settings as make_settings
from support.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

PASSWORD = "Zebra7Crossing"
WRONG = "Wr0ngGuess"


@pytest.fixture
async def clean_redis(redis_url: str, redis_prefix: str) -> AsyncIterator[str]:
    yield redis_url
    client = redis.Redis.from_url(redis_url)
    try:
        leftovers = [key async for key in client.scan_iter(match=f"*{redis_prefix}*")]
        if leftovers:
            await client.unlink(*leftovers)
    finally:
        await client.aclose()


async def test_two_instances_share_the_login_limit_through_redis(
    clean_redis: str, redis_prefix: str
) -> None:
    settings = make_settings(redis_url=clean_redis, rate_limit_prefix=redis_prefix)
    first, second = create_auth(settings), create_auth(settings)
    async with app_client(first) as one, app_client(second) as two:
        body = {"username": "alice", "password": WRONG}
        answers = [
            (await (one if n % 2 else two).post("/auth/login", json=body)).status_code
            for n in range(5)
        ]
        assert answers == [401] * 5
        for client in (one, two):
            refused = await client.post("/auth/login", json=body)
            assert refused.status_code == 429
            assert refused.headers["ratelimit-limit"] == "5"


async def test_the_address_limit_is_shared_too(clean_redis: str, redis_prefix: str) -> None:
    settings = make_settings(
        redis_url=clean_redis, rate_limit_prefix=redis_prefix, rate_limit_login_address="4/minute"
    )
    first, second = create_auth(settings), create_auth(settings)
    async with app_client(first) as one, app_client(second) as two:
        for number in range(4):
            client = one if number < 2 else two
            body = {"username": f"user{number}", "password": WRONG}
            assert (await client.post("/auth/login", json=body)).status_code == 401
        refused = await one.post("/auth/login", json={"username": "user9", "password": WRONG})
        assert refused.status_code == 429


@pytest.fixture
async def server_apps(
    postgres_url: str, clean_redis: str, redis_prefix: str, broker_server_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    settings = make_settings(
        database_url=postgres_url,
        redis_url=clean_redis,
        rate_limit_prefix=redis_prefix,
        broker_url=broker_server_url,
        messaging_exchange=f"mercato.test.{redis_prefix}",
    )
    async with (
        app_client(create_auth(settings)) as auth,
        app_client(create_users(settings)) as users,
    ):
        yield auth, users


async def test_register_login_profile_refresh_on_servers(
    server_apps: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    auth, users = server_apps
    registered = await auth.post(
        "/auth/register",
        json={"username": "alice", "email": "alice@example.com", "password": PASSWORD, "age": 30},
    )
    assert registered.status_code == 201
    duplicate = await auth.post(
        "/auth/register",
        json={"username": "ALICE", "email": "x@example.com", "password": PASSWORD},
    )
    assert duplicate.status_code == 409
    pair = (await auth.post("/auth/login", json={"username": "alice", "password": PASSWORD})).json()

    async def profile_exists() -> bool:
        response = await users.get("/users/me", headers=bearer(pair["access_token"]))
        return response.status_code == 200

    await eventually(profile_exists, within=5)
    profile = (await users.get("/users/me", headers=bearer(pair["access_token"]))).json()
    assert (profile["username"], profile["age"]) == ("alice", 30)

    rotated = await auth.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert rotated.status_code == 200
    reused = await auth.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert reused.status_code == 401
    dead = await auth.post("/auth/refresh", json={"refresh_token": rotated.json()["refresh_token"]})
    assert dead.status_code == 401


async def test_concurrent_refreshes_of_one_token_let_exactly_one_through(
    server_apps: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    auth, _ = server_apps
    await auth.post(
        "/auth/register",
        json={"username": "bob", "email": "bob@example.com", "password": PASSWORD},
    )
    pair = (await auth.post("/auth/login", json={"username": "bob", "password": PASSWORD})).json()
    answers = await asyncio.gather(
        *(
            auth.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
            for _ in range(5)
        )
    )
    assert sorted(r.status_code for r in answers) == [200, 401, 401, 401, 401]


async def test_concurrent_registrations_of_one_name_make_one_account(
    server_apps: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    auth, _ = server_apps
    answers = await asyncio.gather(
        *(
            auth.post(
                "/auth/register",
                json={
                    "username": "Carol" if n % 2 else "carol",
                    "email": f"carol{n}@example.com",
                    "password": PASSWORD,
                },
            )
            for n in range(6)
        )
    )
    codes = sorted(r.status_code for r in answers)
    assert codes == [201, 409, 409, 409, 409, 409]
    assert all(
        r.headers["content-type"] == "application/problem+json"
        for r in answers
        if r.status_code == 409
    )
