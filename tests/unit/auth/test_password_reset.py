"""The rules of password-reset tokens, the ``sid`` of a session, and the reset mail."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from urllib.parse import parse_qs, urlsplit

import pytest

from mercato.auth import domain
from mercato.auth.mail import ResetMails, reset_message

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_a_reset_token_is_32_random_bytes_and_stored_as_its_sha256() -> None:
    tokens = {domain.new_reset_token() for _ in range(100)}
    assert len(tokens) == 100
    token = tokens.pop()
    assert len(token) == 43  # base64url of 32 bytes
    digest = domain.reset_token_hash(token)
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    assert len(digest) == 64
    assert token not in digest


def test_a_token_is_usable_until_it_expires_or_is_used() -> None:
    expires = NOW + timedelta(hours=1)
    assert domain.ResetState(expires, None).usable(NOW)
    assert domain.ResetState(expires, None).usable(expires - timedelta(microseconds=1))
    assert not domain.ResetState(expires, None).usable(expires)  # dead from expires_at on
    assert not domain.ResetState(expires, NOW).usable(NOW)  # used or superseded


def test_the_link_opens_the_storefront_reset_page_with_the_token() -> None:
    token = domain.new_reset_token()
    for base in ("https://shop.example.com", "https://shop.example.com/"):
        link = domain.reset_link(base, token)
        parts = urlsplit(link)
        assert (parts.scheme, parts.netloc, parts.path) == ("https", "shop.example.com", "/reset")
        assert parse_qs(parts.query) == {"token": [token]}


def test_a_session_id_names_its_family_in_22_characters() -> None:
    family = str(uuid.uuid4())
    sid = domain.session_id(family)
    assert len(sid) == 22
    assert domain.family_of_session(sid) == family
    for bad in (None, "", "short", "!" * 22, sid + "x"):
        assert domain.family_of_session(bad) is None


def test_the_mail_carries_the_link_and_its_life() -> None:
    message = reset_message(
        sender="Shop <shop@example.com>",
        to="ann@example.com",
        username="ann",
        link="https://shop.example.com/reset?token=abc",
        valid_for=3600,
        now=NOW,
    )
    assert message["To"] == "ann@example.com"
    assert message["From"] == "Shop <shop@example.com>"
    text = message.get_content()
    assert "https://shop.example.com/reset?token=abc" in text
    assert "60 minutes" in text
    assert "ann" in text


class Flaky:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[str] = []

    async def send(self, message: EmailMessage, *, name: str) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("down")
        self.sent.append(name)


async def test_a_mail_is_tried_a_bounded_number_of_times() -> None:
    mailer = Flaky(failures=2)
    mails = ResetMails(mailer, attempts=3, backoff=0.001)
    mails.send_soon(EmailMessage(), name="m-1", user_id="u-1")
    await mails.close(within=5)
    assert mailer.sent == ["m-1"]

    never = Flaky(failures=10)
    mails = ResetMails(never, attempts=3, backoff=0.001)
    mails.send_soon(EmailMessage(), name="m-2", user_id="u-1")
    await mails.close(within=5)
    assert never.sent == []
    assert never.failures == 7  # three tries, then given up


async def test_closing_abandons_a_mail_that_never_ends_within_the_bound() -> None:
    class Stuck:
        async def send(self, message: EmailMessage, *, name: str) -> None:
            await asyncio.sleep(3600)

    mails = ResetMails(Stuck())
    mails.send_soon(EmailMessage(), name="m-3", user_id="u-1")
    await asyncio.wait_for(mails.close(within=0.05), timeout=5)
