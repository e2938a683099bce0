"""Brute force, credential stuffing, request bursts and resource limits (OWASP API2 and API4
of 2023). The limit checks run on the ``limited`` instance (default login limits,
``RATE_LIMIT_API`` = ``API_LIMIT``), each from a loopback address of its own."""

from __future__ import annotations

import httpx
import pytest

from support.processes import RunningMercato
from support.security_api import API, Seen, client, registration, unique_name

from .conftest import API_LIMIT

#: The login limits of the contract (docs/api.md), at their defaults on the ``limited`` instance.
PER_USERNAME, PER_ADDRESS = 5, 30
#: Whatever address a client claims, the gateway is not behind a trusted proxy.
SPOOFED = ("198.51.100.7", "127.0.0.1", "10.0.0.1, 198.51.100.8")


def assert_limited(answer: httpx.Response) -> None:
    assert answer.status_code == 429, answer.text
    assert int(answer.headers["retry-after"]) > 0
    for header in ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"):
        assert header in answer.headers, (header, dict(answer.headers))
    assert answer.headers["ratelimit-remaining"] == "0"
    assert answer.headers["content-type"] == "application/problem+json"


#: Where a login is sent, and from which loopback addresses (one budget each): through the
#: gateway, and straight at the auth service, which believes X-Forwarded-For only from its
#: own gateway's address.
LOGIN_ROUTES = {
    "gateway": ("gateway", f"{API}/auth/login", "127.0.0.2", "127.0.0.5"),
    "auth-service": ("auth", "/auth/login", "127.0.0.6", "127.0.0.7"),
}


@pytest.mark.parametrize("route", LOGIN_ROUTES)
def test_brute_force_the_sixth_login_for_one_username_is_429(
    limited: RunningMercato, secrets_seen: Seen, route: str
) -> None:
    service, path, source, elsewhere = LOGIN_ROUTES[route]
    body = registration()
    secrets_seen.add(body["password"])
    with client(limited.base_url, secrets_seen, source=source) as gateway:
        assert gateway.post(f"{API}/auth/register", json=body).status_code == 201
    with client(limited.url(service), secrets_seen, source=source) as http:
        guess = {"username": body["username"], "password": "Wrong1Password"}
        secrets_seen.add(guess["password"])
        for _ in range(PER_USERNAME):
            assert http.post(path, json=guess).status_code == 401
        assert_limited(http.post(path, json=guess))
        # Even the right password waits now, and a claimed address does not reset it.
        right = {"username": body["username"], "password": body["password"]}
        assert_limited(http.post(path, json=right))
        for spoofed in SPOOFED:
            headers = {"X-Forwarded-For": spoofed, "X-Real-IP": spoofed.split(",")[0]}
            assert_limited(http.post(path, json=right, headers=headers))
    # Another address is not locked out by this one's failures (no account lock-out DoS).
    with client(limited.url(service), secrets_seen, source=elsewhere) as other:
        assert other.post(path, json=right).status_code == 200


def test_credential_stuffing_the_31st_username_from_one_address_is_429(
    limited: RunningMercato, secrets_seen: Seen
) -> None:
    with client(limited.base_url, secrets_seen, source="127.0.0.3") as http:
        guess = {"password": "Stuff3dPassword"}
        secrets_seen.add(guess["password"])
        for _ in range(PER_ADDRESS):
            login = {**guess, "username": unique_name()}
            assert http.post(f"{API}/auth/login", json=login).status_code == 401
        assert_limited(http.post(f"{API}/auth/login", json={**guess, "username": unique_name()}))
        for spoofed in SPOOFED:
            login = {**guess, "username": unique_name()}
            answer = http.post(
                f"{API}/auth/login", json=login, headers={"X-Forwarded-For": spoofed}
            )
            assert_limited(answer)


def test_a_burst_gets_exactly_the_api_limit_then_429(
    limited: RunningMercato, secrets_seen: Seen
) -> None:
    with client(limited.base_url, secrets_seen, source="127.0.0.4") as http:
        statuses = [http.get(f"{API}/products").status_code for _ in range(API_LIMIT)]
        assert statuses == [200] * API_LIMIT
        assert_limited(http.get(f"{API}/products"))
        for spoofed in SPOOFED:
            answer = http.get(f"{API}/products", headers={"X-Forwarded-For": spoofed})
            assert_limited(answer)


def test_resource_limits_body_paging_and_headers(http: httpx.Client) -> None:
    big = b'{"username": "' + b"a" * (1024 * 1024) + b'"}'
    headers = {"Content-Type": "application/json"}
    assert http.post(f"{API}/auth/register", content=big, headers=headers).status_code == 413
    for params in ({"limit": 101}, {"limit": 0}, {"offset": -1}):
        answer = http.get(f"{API}/products", params=params)
        assert answer.status_code == 422, (params, answer.text)
    answer = http.get(f"{API}/products", params={"limit": 100})
    assert answer.status_code == 200
    assert len(answer.json()["items"]) <= 100
    huge = {"X-Padding": "a" * (16 * 1024 + 1)}
    assert http.get(f"{API}/products", headers=huge).status_code == 431
