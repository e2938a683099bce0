"""Sending mail: the :class:`Mailer` every context sends through, and its two kinds.

Without ``SMTP_URL`` (development), each message is written to ``DATA_DIR/outbox-mail/`` as
an ``.eml`` file that any mail client opens; with it, messages go through that SMTP server
(``smtp://user:password@host:587`` uses STARTTLS when the server offers it, ``smtps://`` TLS
from the start). A mailer only delivers: deciding a mail, and sending it only after the
transaction that decided it committed (STYLE.md item 16), is the caller's business.
"""

from __future__ import annotations

import asyncio
import os
import re
import smtplib
import ssl
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Final, Protocol
from urllib.parse import unquote, urlsplit

from mercato.platform.settings import SharedSettings

#: Where the file mailer writes, under ``DATA_DIR``.
MAIL_DIRECTORY: Final = "outbox-mail"


def compose(
    *,
    sender: str,
    to: str,
    subject: str,
    text: str,
    when: datetime,
    name: str = "",
    key: str | None = None,
) -> EmailMessage:
    """A plain-text mail from ``sender`` to ``to`` (shown as ``name <to>`` when named), dated
    ``when``; ``key`` (an event id) makes its Message-ID stable for one decision."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = f"{name} <{to}>" if name else to
    message["Subject"] = subject
    message["Date"] = format_datetime(when.astimezone(UTC))
    message["Message-ID"] = make_msgid(idstring=key, domain="mercato.invalid")
    message.set_content(text)
    return message


class Mailer(Protocol):
    async def send(self, message: EmailMessage, *, name: str) -> None:
        """Deliver ``message``; ``name`` is stable for one message (a file mailer's name)."""
        ...


def safe_file_name(name: str) -> str:
    """``name`` reduced to letters, digits, ``-`` and ``_`` (a name may come from outside)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:100] or "message"


class FileMailer:
    """Writes each message to ``directory/<name>.eml`` (atomically: a reader never sees half)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, message: EmailMessage, *, name: str) -> None:
        await asyncio.to_thread(self._write, message, name)

    def _write(self, message: EmailMessage, name: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"{safe_file_name(name)}.eml"
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(message.as_bytes())
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


@dataclass(frozen=True, slots=True)
class SmtpMailer:
    """Sends through an SMTP server with the standard library, in a worker thread."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    implicit_tls: bool = False
    timeout: float = 10.0

    @classmethod
    def from_url(cls, url: str) -> SmtpMailer:
        parts = urlsplit(url)
        if parts.scheme not in {"smtp", "smtps"}:
            raise ValueError("SMTP_URL must start with smtp:// or smtps://")
        implicit = parts.scheme == "smtps"
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or (465 if implicit else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            implicit_tls=implicit,
        )

    async def send(self, message: EmailMessage, *, name: str) -> None:
        await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> None:
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.implicit_tls:
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with smtp:
            smtp.ehlo()
            if not self.implicit_tls and smtp.has_extn("starttls"):
                smtp.starttls(context=context)
                smtp.ehlo()
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(message)


def mailer_from_settings(settings: SharedSettings) -> Mailer:
    """The SMTP server of ``SMTP_URL``, else ``.eml`` files in ``DATA_DIR/outbox-mail``."""
    if settings.smtp_url:
        return SmtpMailer.from_url(settings.smtp_url)
    return FileMailer(settings.data_dir / MAIL_DIRECTORY)
