"""Notification mail: composing, .eml files, SMTP URLs."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email import policy
from pathlib import Path

import pytest

from mercato.platform.mail import (
    FileMailer,
    SmtpMailer,
    compose,
    mailer_from_settings,
    safe_file_name,
)
from mercato.settings import load_settings

pytestmark = pytest.mark.anyio


def message() -> email.message.EmailMessage:
    return compose(
        sender="Shop <shop@example.com>",
        to="ann@example.com",
        name="Ann Lee",
        subject="Your order o-1 is confirmed",
        text="Total: 3.00 USD.",
        key="ev-1",
        when=datetime(2026, 11, 30, 10, 0, tzinfo=UTC),
    )


def test_a_message_names_sender_recipient_and_a_stable_id() -> None:
    m = message()
    assert m["To"] == "Ann Lee <ann@example.com>"
    assert m["From"] == "Shop <shop@example.com>"
    assert "ev-1" in m["Message-ID"]
    assert m["Date"] == "Mon, 30 Nov 2026 10:00:00 +0000"
    assert m.get_content().strip() == "Total: 3.00 USD."


async def test_the_file_mailer_writes_one_eml_per_notification(tmp_path: Path) -> None:
    mailer = FileMailer(tmp_path / "outbox-mail")
    await mailer.send(message(), name="ev-1")
    await mailer.send(message(), name="ev-1")  # a redelivery replaces, never duplicates
    files = list((tmp_path / "outbox-mail").iterdir())
    assert [f.name for f in files] == ["ev-1.eml"]
    parsed = email.message_from_bytes(files[0].read_bytes(), policy=policy.default)
    assert parsed["Subject"] == "Your order o-1 is confirmed"


@pytest.mark.parametrize(
    ("name", "safe"), [("../../etc/x", "______etc_x"), ("a.b", "a_b"), ("", "message")]
)
def test_file_names_cannot_escape_the_directory(name: str, safe: str) -> None:
    assert safe_file_name(name) == safe


def test_smtp_urls() -> None:
    plain = SmtpMailer.from_url("smtp://mail.example.com")
    assert (plain.host, plain.port, plain.implicit_tls, plain.username) == (
        "mail.example.com",
        25,
        False,
        None,
    )
    tls = SmtpMailer.from_url("smtps://u%40x:p%2Fw@mail.example.com")
    assert (tls.port, tls.implicit_tls, tls.username, tls.password) == (465, True, "u@x", "p/w")
    assert SmtpMailer.from_url("smtp://h:2525").port == 2525
    with pytest.raises(ValueError, match="smtp://"):
        SmtpMailer.from_url("http://h")


def test_the_mailer_follows_smtp_url(tmp_path: Path) -> None:
    files = mailer_from_settings(
        load_settings(env_file=None, environment="testing", data_dir=tmp_path)
    )
    assert isinstance(files, FileMailer)
    assert files.directory == tmp_path / "outbox-mail"
    smtp = mailer_from_settings(
        load_settings(env_file=None, environment="testing", smtp_url="smtp://h:2525")
    )
    assert isinstance(smtp, SmtpMailer)
