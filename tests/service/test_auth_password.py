"""Password reset by mail and password change (API.md, the three ``/auth/password/`` rows),
on the auth service in-process with the file mailer of development (``.eml`` files)."""

from __future__ import annotations

import asyncio
import email
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from mercato.auth import domain
from mercato.auth.app import create_app
from mercato.platform.db import Database
from support.auth import app_client, bearer
from support.auth import test_settings as make_settings
from support.waiting import eventually

pytestmark = pytest.mark.anyio

PASSWORD = "Tr1ckyHorse"
NEW_PASSWORD = "N3wStableHorse"
LINK = re.compile(r"http\S+/reset\?token=\S+")


@dataclass
class Shop:
    app: FastAPI
    http: httpx.AsyncClient
    mail_dir: Path

    @property
    def db(self) -> Database:
        database: Database = self.app.state.context.db
        return database

    def move_clock(self, by: timedelta) -> None:
        """Password reset reads the service's clock: from now on it is ``by`` later."""
        self.app.state.auth_service.clock = lambda: datetime.now(UTC) + by

    def mails(self) -> list[EmailMessage]:
        if not self.mail_dir.is_dir():
            return []
        parse = email.message_from_bytes
        return [
            parse(path.read_bytes(), policy=policy.default)  # type: ignore[misc]
            for path in sorted(self.mail_dir.glob("*.eml"), key=lambda p: p.stat().st_mtime)
        ]

    async def mail_count(self, count: int) -> list[EmailMessage]:
        return await eventually(lambda: (found := self.mails()) and len(found) == count and found)

    async def forgot(self, address: str = "alice@example.com", **kw: Any) -> httpx.Response:
        return await self.http.post("/auth/password/forgot", json={"email": address}, **kw)

    async def reset(self, token: str, password: str = NEW_PASSWORD) -> httpx.Response:
        return await self.http.post(
            "/auth/password/reset", json={"token": token, "new_password": password}
        )

    async def login(self, password: str = PASSWORD, username: str = "alice") -> httpx.Response:
        return await self.http.post(
            "/auth/login", json={"username": username, "password": password}
        )

    async def refresh(self, refresh_token: str) -> httpx.Response:
        return await self.http.post("/auth/refresh", json={"refresh_token": refresh_token})

    async def mailed_token(self, count: int = 1) -> str:
        """Ask for a link for alice and answer the token of the ``count``-th mail."""
        assert (await self.forgot()).status_code == 202
        return token_of((await self.mail_count(count))[-1])


def link_of(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    found = LINK.search(body.get_content())
    assert found, body.get_content()
    return found.group(0)


def token_of(message: EmailMessage) -> str:
    return parse_qs(urlsplit(link_of(message)).query)["token"][0]


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def settings_for(tmp_path: Path) -> Callable[..., Any]:
    def build(**overrides: Any) -> Any:
        return make_settings(data_dir=tmp_path, **overrides)

    return build


@asynccontextmanager
async def open_shop(app: FastAPI, tmp_path: Path) -> AsyncIterator[Shop]:
    async with app_client(app) as http:
        registered = await http.post(
            "/auth/register",
            json={"username": "alice", "email": "Alice@Example.com", "password": PASSWORD},
        )
        assert registered.status_code == 201
        yield Shop(app, http, tmp_path / "outbox-mail")


@pytest.fixture
async def shop(settings_for: Callable[..., Any], tmp_path: Path) -> AsyncIterator[Shop]:
    app = create_app(settings_for(public_url="https://shop.example.com/"))
    async with open_shop(app, tmp_path) as opened:
        yield opened


# --- forgot -----------------------------------------------------------------------------


async def test_a_known_address_is_mailed_a_link_to_the_storefront_reset_page(shop: Shop) -> None:
    answer = await shop.forgot("ALICE@example.com")  # addresses match whatever their case
    assert answer.status_code == 202
    [mail] = await shop.mail_count(1)
    assert mail["To"] == "Alice@example.com"  # as registered (the domain in lower case)
    assert mail["From"] == "Mercato <no-reply@mercato.invalid>"
    assert "password" in mail["Subject"].lower()
    assert link_of(mail).startswith("https://shop.example.com/reset?token=")
    assert "60 minutes" in mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert len(token_of(mail)) >= 43  # 32 random bytes


async def test_an_unknown_address_gets_the_same_answer_and_no_mail(shop: Shop) -> None:
    known = await shop.forgot("alice@example.com")
    unknown = await shop.forgot("nobody@example.com")
    assert (unknown.status_code, unknown.content) == (known.status_code, known.content)
    assert unknown.headers.get("content-type") == known.headers.get("content-type")
    await shop.mail_count(1)
    await asyncio.sleep(0.1)
    assert len(shop.mails()) == 1  # only alice's


async def test_an_invalid_address_is_422(shop: Shop) -> None:
    assert_problem(await shop.forgot("not-an-address"), 422)
    extra = await shop.http.post(
        "/auth/password/forgot", json={"email": "alice@example.com", "roles": ["admin"]}
    )
    assert_problem(extra, 422)


class SlowMailer:
    """A mail server that takes its time: the answer must not wait for it."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.sent: list[EmailMessage] = []

    async def send(self, message: EmailMessage, *, name: str) -> None:
        await asyncio.sleep(self.delay)
        self.sent.append(message)


async def test_the_answer_never_waits_for_the_mail_server(
    settings_for: Callable[..., Any], tmp_path: Path
) -> None:
    """Sending after the commit, in the background: a known address answers as fast as an
    unknown one however slow the mail server is (its timing reveals nothing)."""
    mailer = SlowMailer(delay=1.0)
    app = create_app(settings_for(), mailer=mailer)
    async with open_shop(app, tmp_path) as shop:
        started = time.monotonic()
        assert (await shop.forgot()).status_code == 202
        known = time.monotonic() - started
        started = time.monotonic()
        assert (await shop.forgot("nobody@example.com")).status_code == 202
        unknown = time.monotonic() - started
        assert known < 0.5, known
        assert unknown < 0.5, unknown
        assert mailer.sent == []  # still on its way
        await eventually(lambda: len(mailer.sent) == 1, within=5)


class FailingMailer:
    def __init__(self, failures: int) -> None:
        self.failures, self.sent = failures, 0

    async def send(self, message: EmailMessage, *, name: str) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionRefusedError("mail server down")
        self.sent += 1


async def test_a_failed_send_is_tried_again(
    settings_for: Callable[..., Any], tmp_path: Path
) -> None:
    mailer = FailingMailer(failures=1)
    app = create_app(settings_for(), mailer=mailer)
    async with open_shop(app, tmp_path) as shop:
        shop.app.state.auth_service.mails.backoff = 0.01
        assert (await shop.forgot()).status_code == 202
        await eventually(lambda: mailer.sent == 1, within=5)


async def test_no_mail_leaves_when_the_transaction_rolls_back(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken_commit(self: Any) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr("mercato.platform.db.UnitOfWork.commit", broken_commit)
    assert (await shop.forgot()).status_code == 500
    await asyncio.sleep(0.2)
    assert shop.mails() == []


# --- reset ------------------------------------------------------------------------------


async def test_the_mailed_token_resets_the_password_once(shop: Shop) -> None:
    token = await shop.mailed_token()
    answer = await shop.reset(token)
    assert answer.status_code == 204
    assert answer.content == b""
    assert (await shop.login(NEW_PASSWORD)).status_code == 200
    assert (await shop.login(PASSWORD)).status_code == 401
    again = assert_problem(await shop.reset(token, "An0therHorse"), 400)
    assert again["type"].endswith("invalid-reset-token")
    assert (await shop.login(NEW_PASSWORD)).status_code == 200


async def test_an_unknown_token_is_400(shop: Shop) -> None:
    assert_problem(await shop.reset(domain.new_reset_token()), 400)


async def test_an_expired_token_is_400(shop: Shop) -> None:
    token = await shop.mailed_token()
    shop.move_clock(timedelta(seconds=3600))  # PASSWORD_RESET_TTL's default, to the second
    assert_problem(await shop.reset(token), 400)
    shop.move_clock(timedelta(0))
    assert (await shop.login(PASSWORD)).status_code == 200  # nothing changed


async def test_the_ttl_follows_the_setting(
    settings_for: Callable[..., Any], tmp_path: Path
) -> None:
    app = create_app(settings_for(password_reset_ttl=120))
    async with open_shop(app, tmp_path) as shop:
        token = await shop.mailed_token()
        shop.move_clock(timedelta(seconds=119))
        assert (await shop.reset(token)).status_code == 204
        token = await shop.mailed_token(2)
        shop.move_clock(timedelta(seconds=119 + 121))
        assert_problem(await shop.reset(token, "An0therHorse"), 400)


async def test_a_new_link_kills_the_older_one(shop: Shop) -> None:
    first = await shop.mailed_token(1)
    second = await shop.mailed_token(2)
    assert first != second
    assert_problem(await shop.reset(first), 400)
    assert (await shop.reset(second)).status_code == 204


async def test_a_reset_kills_the_other_links_of_the_account(shop: Shop) -> None:
    # Two links, the older one superseded; and one asked before a reset by another way:
    # after any reset no earlier link sets a password.
    first = await shop.mailed_token(1)
    second = await shop.mailed_token(2)
    assert (await shop.reset(second)).status_code == 204
    assert_problem(await shop.reset(first, "An0therHorse"), 400)
    assert (await shop.login(NEW_PASSWORD)).status_code == 200


async def test_two_concurrent_resets_with_one_token_cannot_both_win(shop: Shop) -> None:
    token = await shop.mailed_token()
    answers = await asyncio.gather(
        shop.reset(token, "F1rstChoiceHorse"), shop.reset(token, "S3condChoiceHorse")
    )
    assert sorted(a.status_code for a in answers) == [204, 400]


async def test_a_weak_new_password_is_422_and_spends_nothing(shop: Shop) -> None:
    token = await shop.mailed_token()
    for weak in ("short1A", "nouppercase1", "NoDigitsHere", "Password1"):
        body = assert_problem(await shop.reset(token, weak), 422)
        assert body["errors"][0]["loc"] == ["body", "new_password"]
    assert (await shop.reset(token)).status_code == 204  # still good


async def test_a_reset_revokes_every_refresh_token_family(shop: Shop) -> None:
    sessions = [(await shop.login()).json() for _ in range(2)]
    token = await shop.mailed_token()
    assert (await shop.reset(token)).status_code == 204
    for session in sessions:
        assert_problem(await shop.refresh(session["refresh_token"]), 401)
    fresh = (await shop.login(NEW_PASSWORD)).json()
    assert (await shop.refresh(fresh["refresh_token"])).status_code == 200


async def test_the_table_holds_only_the_digest_of_a_token(shop: Shop) -> None:
    token = await shop.mailed_token()
    async with shop.db.unit_of_work(read_only=True) as uow:
        rows = (await uow.session.execute(text("SELECT * FROM password_resets"))).mappings().all()
    assert len(rows) == 1
    row = dict(rows[0])
    assert row["token_hash"] == domain.reset_token_hash(token)
    assert all(token not in str(value) for value in row.values())


# --- change -----------------------------------------------------------------------------


async def change(
    shop: Shop, access_token: str, current: str = PASSWORD, new: str = NEW_PASSWORD
) -> httpx.Response:
    return await shop.http.post(
        "/auth/password/change",
        json={"current_password": current, "new_password": new},
        headers=bearer(access_token),
    )


async def test_a_change_keeps_the_callers_session_and_ends_the_others(shop: Shop) -> None:
    mine, other = (await shop.login()).json(), (await shop.login()).json()
    answer = await change(shop, mine["access_token"])
    assert answer.status_code == 204
    assert answer.content == b""
    assert_problem(await shop.refresh(other["refresh_token"]), 401)
    rotated = await shop.refresh(mine["refresh_token"])
    assert rotated.status_code == 200
    assert (await shop.login(NEW_PASSWORD)).status_code == 200
    assert (await shop.login(PASSWORD)).status_code == 401


async def test_a_change_from_a_rotated_session_keeps_that_session(shop: Shop) -> None:
    first = (await shop.login()).json()
    rotated = (await shop.refresh(first["refresh_token"])).json()  # the same family
    assert (await change(shop, rotated["access_token"])).status_code == 204
    assert (await shop.refresh(rotated["refresh_token"])).status_code == 200


async def test_a_wrong_current_password_is_400_and_changes_nothing(shop: Shop) -> None:
    pair = (await shop.login()).json()
    body = assert_problem(await change(shop, pair["access_token"], current="Wr0ngHorse"), 400)
    assert body["type"].endswith("wrong-current-password")
    assert (await shop.login(PASSWORD)).status_code == 200


async def test_a_weak_new_password_is_422_on_change(shop: Shop) -> None:
    pair = (await shop.login()).json()
    body = assert_problem(await change(shop, pair["access_token"], new="weakpass"), 422)
    assert body["errors"][0]["loc"] == ["body", "new_password"]


async def test_change_needs_a_bearer_token(shop: Shop) -> None:
    answer = await shop.http.post(
        "/auth/password/change", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert_problem(answer, 401)


async def test_a_change_kills_pending_reset_links(shop: Shop) -> None:
    token = await shop.mailed_token()
    pair = (await shop.login()).json()
    assert (await change(shop, pair["access_token"])).status_code == 204
    assert_problem(await shop.reset(token, "An0therHorse"), 400)


# --- rate limits ------------------------------------------------------------------------


async def test_forgot_is_limited_per_address_whatever_the_client(
    settings_for: Callable[..., Any], tmp_path: Path
) -> None:
    app = create_app(settings_for(rate_limit_password_reset="2/hour"))
    async with open_shop(app, tmp_path) as shop:
        for _ in range(2):
            assert (await shop.forgot("nobody@example.com")).status_code == 202
        refused = assert_problem(await shop.forgot("NOBODY@example.com"), 429)
        assert "password-reset" in refused["detail"]
        # the same for a known address: the limit reveals nothing either
        for _ in range(2):
            assert (await shop.forgot()).status_code == 202
        assert_problem(await shop.forgot(), 429)
        transport = httpx.ASGITransport(app, client=("198.51.100.9", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
            answer = await other.post("/auth/password/forgot", json={"email": "nobody@example.com"})
            assert_problem(answer, 429)


async def test_forgot_and_reset_are_limited_per_client(
    settings_for: Callable[..., Any], tmp_path: Path
) -> None:
    app = create_app(settings_for(rate_limit_password_reset_address="3/minute"))
    async with open_shop(app, tmp_path) as shop:
        assert (await shop.forgot("a@example.com")).status_code == 202
        assert (await shop.forgot("b@example.com")).status_code == 202
        assert_problem(await shop.reset(domain.new_reset_token()), 400)
        assert_problem(await shop.reset(domain.new_reset_token()), 429)
        assert_problem(await shop.forgot("c@example.com"), 429)


async def test_change_is_limited_like_login(
    settings_for: Callable[..., Any], tmp_path: Path
) -> None:
    app = create_app(settings_for(rate_limit_login="2/minute"))
    async with open_shop(app, tmp_path) as shop:
        pair = (await shop.login()).json()
        for _ in range(2):
            assert_problem(await change(shop, pair["access_token"], current="Wr0ngHorse"), 400)
        assert_problem(await change(shop, pair["access_token"]), 429)


# --- logs -------------------------------------------------------------------------------


async def test_a_reset_flow_logs_no_token_no_link_and_no_password(
    json_logs: pytest.CaptureFixture[str], shop: Shop
) -> None:
    first = await shop.mailed_token(1)
    token = await shop.mailed_token(2)
    link = link_of((await shop.mail_count(2))[-1])
    assert_problem(await shop.reset(first), 400)  # superseded
    assert (await shop.reset(token)).status_code == 204
    assert_problem(await shop.reset(token), 400)  # used
    pair = (await shop.login(NEW_PASSWORD)).json()
    assert (await change(shop, pair["access_token"], NEW_PASSWORD, "Th1rdHorse")).status_code == 204
    await asyncio.sleep(0.1)  # the mail's own log lines
    captured = json_logs.readouterr()
    everything = captured.out + captured.err
    names = {
        json.loads(line)["event"] for line in captured.err.splitlines() if line.startswith("{")
    }
    assert {
        "security.password_reset_requested",
        "security.password_reset",
        "security.password_reset_refused",
        "security.password_changed",
        "password reset mail sent",
    } <= names, names
    # (Only the token's digest may show, in the SQL parameters of DEBUG driver logs: it
    # opens nothing.)
    for secret in (first, token, link, NEW_PASSWORD, "Th1rdHorse"):
        assert secret not in everything
