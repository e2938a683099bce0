"""The notification worker: mails the customer when an order is confirmed or rejected.

It is its own consumer group (``notifications``), so it runs inside the orders service
(``NOTIFICATIONS_IN_PROCESS=true``, the default) or as a separate process
(``mercato worker``), never both. Mail goes through the SMTP server of ``SMTP_URL``
(``smtp://user:password@host:587`` uses STARTTLS when the server offers it, ``smtps://``
TLS from the start); without one, each message is written to ``DATA_DIR/outbox-mail/`` as an
``.eml`` file that any mail client opens.

Addresses come from ``user.registered`` events, kept in the orders database, so sending never
waits on the users service. Delivery is at least once: a message whose event is retried
after it was sent may be sent again. It keeps the same ``Message-ID`` (derived from the
event id), so mail clients show it once, and the ``.eml`` file of a repeat replaces the first.
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
from typing import Protocol
from urllib.parse import unquote, urlsplit

import structlog

from mercato.auth.contracts import UserRegistered
from mercato.messaging import Envelope, Handlers
from mercato.orders.contracts import OrderConfirmed, OrderRejected
from mercato.orders.repository import RecipientRepository
from mercato.platform.db import UnitOfWork
from mercato.platform.settings import Settings

log = structlog.stdlib.get_logger("mercato.orders.notifications")


class Mailer(Protocol):
    async def send(self, message: EmailMessage, *, name: str) -> None:
        """Deliver ``message``; ``name`` is stable for one notification (its event id)."""
        ...


def safe_file_name(name: str) -> str:
    """``name`` reduced to letters, digits, ``-`` and ``_`` (an event id comes from outside)."""
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


def mailer_from_settings(settings: Settings) -> Mailer:
    if settings.smtp_url:
        return SmtpMailer.from_url(settings.smtp_url)
    return FileMailer(settings.data_dir / "outbox-mail")


def compose(
    *, sender: str, to: str, name: str, subject: str, text: str, event_id: str, when: datetime
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = f"{name} <{to}>" if name else to
    message["Subject"] = subject
    message["Date"] = format_datetime(when.astimezone(UTC))
    message["Message-ID"] = make_msgid(idstring=event_id, domain="mercato.invalid")
    message.set_content(text)
    return message


def notification_handlers(mailer: Mailer, *, sender: str) -> Handlers:
    """The ``notifications`` consumer group, mailing through ``mailer``."""
    handlers = Handlers("notifications")

    @handlers.on(UserRegistered)
    async def remember_recipient(event: Envelope[UserRegistered], uow: UnitOfWork) -> None:
        user = event.data
        await RecipientRepository(uow.session).save(
            user_id=user.user_id,
            email=user.email,
            name=user.full_name or user.username,
            now=datetime.now(UTC),
        )

    @handlers.on(OrderConfirmed)
    async def mail_confirmation(event: Envelope[OrderConfirmed], uow: UnitOfWork) -> None:
        order = event.data
        await _mail(
            uow,
            mailer,
            sender=sender,
            user_id=order.user_id,
            event=event,
            subject=f"Your order {order.order_id} is confirmed",
            text=(
                f"Good news: your order {order.order_id} is confirmed.\n"
                f"Total: {order.total:.2f} {order.currency}.\n\nThank you for shopping at Mercato."
            ),
        )

    @handlers.on(OrderRejected)
    async def mail_rejection(event: Envelope[OrderRejected], uow: UnitOfWork) -> None:
        order = event.data
        await _mail(
            uow,
            mailer,
            sender=sender,
            user_id=order.user_id,
            event=event,
            subject=f"Your order {order.order_id} could not be accepted",
            text=(
                f"We are sorry: your order {order.order_id} could not be accepted.\n"
                f"Reason: {order.reason}.\nNothing was charged."
            ),
        )

    return handlers


async def _mail(
    uow: UnitOfWork,
    mailer: Mailer,
    *,
    sender: str,
    user_id: str,
    event: Envelope[OrderConfirmed] | Envelope[OrderRejected],
    subject: str,
    text: str,
) -> None:
    recipient = await RecipientRepository(uow.session).get(user_id)
    if recipient is None:
        log.warning("no address for user; notification skipped", user_id=user_id, event_id=event.id)
        return
    message = compose(
        sender=sender,
        to=recipient.email,
        name=recipient.name,
        subject=subject,
        text=text,
        event_id=event.id,
        when=event.occurred_at,
    )
    await mailer.send(message, name=event.id)
    log.info("notification sent", user_id=user_id, event_type=event.type, event_id=event.id)
