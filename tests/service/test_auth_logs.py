"""Security events are logged, structured; no password and no token ever is."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mercato.auth.app import create_app
from support.auth import app_client, bearer
from support.auth import test_settings as make_settings

pytestmark = pytest.mark.anyio

PASSWORD = "Sup3rSecretHorse"
WRONG = "Wr0ngGuessHorse"


def events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_a_whole_session_logs_no_password_and_no_token(
    json_logs: pytest.CaptureFixture[str],
) -> None:
    secrets: list[str] = [PASSWORD, WRONG]
    async with app_client(create_app(make_settings())) as client:
        await client.post(
            "/auth/register",
            json={"username": "alice", "email": "alice@example.com", "password": PASSWORD},
        )
        await client.post("/auth/register", json={"username": "x", "password": WRONG})  # 422
        await client.post("/auth/login", json={"username": "alice", "password": WRONG})
        login = (
            await client.post("/auth/login", json={"username": "alice", "password": PASSWORD})
        ).json()
        form = (
            await client.post("/auth/token", data={"username": "alice", "password": PASSWORD})
        ).json()
        secrets += [login["access_token"], login["refresh_token"], form["refresh_token"]]
        rotated = (
            await client.post("/auth/refresh", json={"refresh_token": login["refresh_token"]})
        ).json()
        secrets += [rotated["access_token"], rotated["refresh_token"]]
        await client.post("/auth/refresh", json={"refresh_token": login["refresh_token"]})  # reuse
        await client.get("/auth/me", headers=bearer(rotated["access_token"]))
        await client.get("/auth/me", headers=bearer(rotated["access_token"] + "x"))  # bad token
        await client.post(
            "/auth/logout",
            json={"refresh_token": form["refresh_token"]},
            headers=bearer(form["access_token"]),
        )
        secrets.append(form["access_token"])
    captured = json_logs.readouterr()
    everything = captured.out + captured.err
    found = events(captured.err)
    assert found, "the run logged nothing: the test would prove nothing"
    for secret in secrets:
        assert secret not in everything
        # nor a recognisable piece of a token (its signature part)
        assert secret.rsplit(".", 1)[-1] not in everything
    names = {event["event"] for event in found}
    assert {
        "security.login_failed",
        "security.login_ok",
        "security.refresh_reuse",
        "security.bad_token",
        "security.logout",
    } <= names


async def test_security_events_name_who_where_when_and_the_outcome(
    json_logs: pytest.CaptureFixture[str],
) -> None:
    async with app_client(create_app(make_settings())) as client:
        await client.post("/auth/login", json={"username": "mallory", "password": WRONG})
    failed = next(
        e for e in events(json_logs.readouterr().err) if e["event"] == "security.login_failed"
    )
    assert failed["username"] == "mallory"
    assert failed["client"] == "203.0.113.7"
    assert failed["outcome"] == "refused"
    assert failed["timestamp"]
    assert failed["level"] == "warning"


async def test_rate_limited_attempts_are_logged(json_logs: pytest.CaptureFixture[str]) -> None:
    async with app_client(create_app(make_settings(rate_limit_login="1/minute"))) as client:
        for _ in range(2):
            await client.post("/auth/login", json={"username": "mallory", "password": WRONG})
    limited = [
        e for e in events(json_logs.readouterr().err) if e["event"] == "security.rate_limited"
    ]
    assert limited
    assert limited[0]["client"] == "203.0.113.7"
    assert limited[0]["username"] == "mallory"
