"""Login rate limits: per username and client address, per client address, honouring
``X-Forwarded-For`` only from a trusted proxy, and failing closed when Redis is down."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from mercato.auth.app import create_app
from support.auth import app_client
from support.auth import test_settings as make_settings
from support.metrics import metric_value, metric_values

pytestmark = pytest.mark.anyio

PASSWORD = "Tr1ckyHorse"
SCRAPER = ("10.0.0.5", 40000)  # a private address: /metrics answers it
WRONG = "Wr0ngPassword"


async def attempt(
    client: httpx.AsyncClient, username: str = "alice", password: str = WRONG, **kw: Any
) -> httpx.Response:
    return await client.post("/auth/login", json={"username": username, "password": password}, **kw)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(create_app(make_settings())) as http:
        await http.post(
            "/auth/register",
            json={"username": "alice", "email": "alice@example.com", "password": PASSWORD},
        )
        yield http


async def test_the_sixth_attempt_for_one_username_is_429_with_headers(
    client: httpx.AsyncClient,
) -> None:
    answers = [await attempt(client) for _ in range(5)]
    assert [r.status_code for r in answers] == [401] * 5
    refused = await attempt(client)
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["ratelimit-limit"] == "5"
    assert refused.headers["ratelimit-remaining"] == "0"
    assert 0 <= int(refused.headers["ratelimit-reset"]) <= 60
    # even the right password is refused while limited
    assert (await attempt(client, password=PASSWORD)).status_code == 429


async def test_the_limit_is_per_username_whatever_its_case(client: httpx.AsyncClient) -> None:
    for name in ("alice", "ALICE", "Alice", "aLiCe", "alicE"):
        assert (await attempt(client, name)).status_code == 401
    assert (await attempt(client, "ALIce")).status_code == 429
    assert (await attempt(client, "bob")).status_code == 401  # another username goes on


async def test_one_address_gets_30_attempts_whatever_the_username(
    client: httpx.AsyncClient,
) -> None:
    for number in range(30):
        assert (await attempt(client, f"user{number}")).status_code == 401
    response = await attempt(client, "someoneelse")
    assert response.status_code == 429
    assert response.headers["ratelimit-limit"] == "30"


async def test_limits_are_configurable() -> None:
    settings = make_settings(rate_limit_login="2/minute")
    async with app_client(create_app(settings)) as client:
        assert [(await attempt(client)).status_code for _ in range(3)] == [401, 401, 429]


async def test_a_client_cannot_pick_its_address_with_x_forwarded_for(
    client: httpx.AsyncClient,
) -> None:
    for number in range(5):
        headers = {"X-Forwarded-For": f"198.51.100.{number}"}
        assert (await attempt(client, headers=headers)).status_code == 401
    headers = {"X-Forwarded-For": "198.51.100.99"}
    assert (await attempt(client, headers=headers)).status_code == 429


async def test_x_forwarded_for_from_a_trusted_proxy_names_the_client() -> None:
    settings = make_settings(trusted_proxies="10.0.0.0/8")
    app = create_app(settings)
    async with app_client(app, client=("10.0.0.2", 40000)) as proxy:
        for _ in range(5):
            headers = {"X-Forwarded-For": "198.51.100.1"}
            assert (await attempt(proxy, headers=headers)).status_code == 401
        limited = await attempt(proxy, headers={"X-Forwarded-For": "198.51.100.1"})
        assert limited.status_code == 429
        other = await attempt(proxy, headers={"X-Forwarded-For": "198.51.100.2"})
        assert other.status_code == 401


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_login_fails_closed_when_redis_is_down() -> None:
    settings = make_settings(redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    async with app_client(create_app(settings)) as client:
        response = await attempt(client, password=PASSWORD)
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"] == "5"
        assert response.json()["dependency"] == "cache"
        assert "access_token" not in response.text


async def test_failing_open_is_a_choice() -> None:
    settings = make_settings(
        redis_url=f"redis://127.0.0.1:{closed_port()}/0", rate_limit_fail_closed=False
    )
    async with app_client(create_app(settings)) as client:
        assert (await attempt(client)).status_code == 401  # let through to the password check


async def test_behind_its_gateway_each_client_has_its_own_limits() -> None:
    settings = make_settings(rate_limit_login_address="2/minute", internal_proxies="127.0.0.1")
    async with app_client(create_app(settings), client=("127.0.0.1", 40000)) as gateway:
        for client_ip in ("198.51.100.1", "198.51.100.2"):
            headers = {"X-Forwarded-For": client_ip}
            answers = [
                (await attempt(gateway, f"user{n}", headers=headers)).status_code for n in range(3)
            ]
            assert answers == [401, 401, 429]


@pytest.mark.parametrize("peer", ["127.0.0.1", "::1", "10.0.0.9"])
async def test_by_default_no_peer_is_believed_not_even_a_loopback_one(peer: str) -> None:
    """A caller that reaches the service port directly (a sidecar, a local process, another
    pod) cannot buy fresh limits by sending ``X-Forwarded-For``."""
    settings = make_settings(rate_limit_login_address="2/minute")
    async with app_client(create_app(settings), client=(peer, 40000)) as peer_client:
        answers = [
            (
                await attempt(
                    peer_client, f"user{n}", headers={"X-Forwarded-For": f"198.51.100.{n}"}
                )
            ).status_code
            for n in range(3)
        ]
        assert answers == [401, 401, 429]


async def test_login_outcomes_and_refusals_are_counted_by_limit() -> None:
    settings = make_settings(rate_limit_login="2/minute", rate_limit_password_reset="1/minute")
    async with app_client(create_app(settings), client=SCRAPER) as client:
        await client.post(
            "/auth/register",
            json={"username": "alice", "email": "alice@example.com", "password": PASSWORD},
        )
        assert (await attempt(client, password=PASSWORD)).status_code == 200
        token = await client.post("/auth/token", data={"username": "alice", "password": WRONG})
        assert token.status_code == 401  # the OAuth2 form counts as a login too
        assert (await attempt(client)).status_code == 429
        forgot = [
            await client.post("/auth/password/forgot", json={"email": "alice@example.com"})
            for _ in range(2)
        ]
        assert [r.status_code for r in forgot] == [202, 429]
        metrics = (await client.get("/metrics")).text

    logins = {
        outcome: metric_value(metrics, "auth_login_attempts_total", outcome=outcome)
        for outcome in ("success", "failure", "rate_limited")
    }
    assert logins == {"success": 1, "failure": 1, "rate_limited": 1}
    refusals = metric_values(metrics, "rate_limit_refusals_total", service="auth")
    assert sum(refusals) == 2
    assert metric_value(metrics, "rate_limit_refusals_total", limit="login") == 1
    assert metric_value(metrics, "rate_limit_refusals_total", limit="password_reset") == 1


async def test_a_limit_storage_outage_is_no_refusal_and_no_login_outcome() -> None:
    settings = make_settings(redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    async with app_client(create_app(settings), client=SCRAPER) as client:
        assert (await attempt(client)).status_code == 503
        metrics = (await client.get("/metrics")).text
    assert metric_value(metrics, "rate_limit_refusals_total") == 0
    assert metric_value(metrics, "auth_login_attempts_total") == 0
