"""The notification worker: mails the customer when an order is confirmed or rejected.

It is its own consumer group (``notifications``), so it runs inside the orders service
(``NOTIFICATIONS_IN_PROCESS=true``, the default) or as a separate process
(``mercato worker``), never both. Mail goes through the SMTP server of ``SMTP_URL``
(``smtp://user:password@host:587`` uses STARTTLS when the server offers it, ``smtps://``
TLS from the start); without one, each message is written to ``DATA_DIR/outbox-mail/`` as an
``.eml`` file that any mail client opens.

Addresses come from ``user.registered`` events, kept in the orders database, so sending never
waits on the users service. A handler only *decides*: in the consumer's transaction it renders
the mail and records it in ``notifications``, one row per event id (a redelivered event finds
its row). After the commit the :class:`MailSender` mails it and marks it sent, so no
transaction waits on an SMTP server (STYLE.md item 16). A failed send stays unsent and is tried
again after a capped backoff, for as long as it takes; rows left by a crash are found by the
sender's periodic sweep. Delivery is at least once: a sender that stops between the mail and
marking it sent mails it again later, with the same ``Message-ID`` (derived from the event
id), so mail clients show it once, and the ``.eml`` file of a repeat replaces the first.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser

import structlog

from mercato.auth.contracts import UserRegistered
from mercato.messaging import Envelope, Handlers
from mercato.orders.contracts import OrderConfirmed, OrderRejected
from mercato.orders.repository import NotificationRepository, RecipientRepository
from mercato.orders.service import (
    claim_due_notifications,
    next_notification_due,
    notification_failed,
    notifications_sent,
    prune_sent_notifications,
    release_notifications,
)
from mercato.platform.db import Database, UnitOfWork
from mercato.platform.mail import Mailer, compose
from mercato.platform.shutdown import pause, wait_ended

log = structlog.stdlib.get_logger("mercato.orders.notifications")


#: How long a sender holds a notification it is mailing; if it vanishes meanwhile (crash),
#: another pass mails it after this. Far longer than an SMTP exchange may take.
CLAIM_LEASE = timedelta(minutes=2)
#: The safety net: the sender looks for due notifications at least this often (rows of
#: another process, or left by a crash), besides being woken after each commit.
SWEEP_INTERVAL = 30.0
#: Notifications sent per pass before the sender looks again.
BATCH = 50


class MailSender:
    """Mails the notifications the handlers recorded, after their transaction committed.

    One background loop: woken by :meth:`wake` (after each commit that decided a mail) and
    every ``sweep_interval`` seconds; stopped by :meth:`stop`, within a bound. A sent
    notification is kept ``retention`` seconds (the inbox's window: as long as a redelivery
    of its event is recognised), then pruned. Its transactions are use cases of
    :mod:`mercato.orders.service`."""

    def __init__(
        self,
        mailer: Mailer,
        *,
        retry_backoff: float,
        retry_backoff_max: float,
        retention: float,
        sweep_interval: float = SWEEP_INTERVAL,
    ) -> None:
        self.mailer = mailer
        self.retry_backoff, self.retry_backoff_max = retry_backoff, retry_backoff_max
        self.retention = retention
        self.sweep_interval = sweep_interval
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self, database: Database) -> None:
        self._wake, self._stopping = asyncio.Event(), asyncio.Event()  # of the running loop
        self._task = asyncio.create_task(self._run(database), name="orders-mail-sender")

    async def stop(self, within: float) -> None:
        """Stop the loop: a mail being sent gets ``within`` seconds to finish."""
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await wait_ended([self._task], within=within, what="sending notifications")
            self._task = None

    async def _run(self, database: Database) -> None:
        loop = asyncio.get_running_loop()
        last_prune = loop.time()
        while not self._stopping.is_set():
            self._wake.clear()  # before the pass: a commit during it asks for another
            try:
                delay = await self.send_due(database)
                if loop.time() - last_prune >= self.sweep_interval:
                    last_prune = loop.time()
                    await self.prune(database)
            except Exception:  # the database may be away for a while; try again later
                log.warning("notifications could not be sent; trying again", exc_info=True)
                delay = self.retry_backoff_max
            await pause(delay, self._wake)

    async def send_due(self, database: Database) -> float:
        """Mail the notifications that are due; return how long until the next one is.

        A batch is claimed in one transaction and those mailed are marked sent in one more
        (a crash between the two mails them again after the lease, as at least once
        allows); those left when the sender stops are given back at once."""
        claimed = await claim_due_notifications(
            database, now=datetime.now(UTC), lease=CLAIM_LEASE, limit=BATCH
        )
        sent: list[tuple[str, int]] = []
        try:
            for index, (event_id, data, attempt) in enumerate(claimed):
                if self._stopping.is_set():
                    left = [event_id for event_id, _, _ in claimed[index:]]
                    await release_notifications(database, left, now=datetime.now(UTC))
                    break
                if await self._send(database, event_id, data, attempt):
                    sent.append((event_id, attempt))
        finally:
            if sent:
                ids = [event_id for event_id, _ in sent]
                await notifications_sent(database, ids, now=datetime.now(UTC))
        for event_id, attempt in sent:
            log.info("notification sent", event_id=event_id, attempt=attempt)
        next_due = await next_notification_due(database)
        if next_due is None:
            return self.sweep_interval
        wait = (next_due - datetime.now(UTC)).total_seconds()
        return min(max(wait, 0.0), self.sweep_interval)

    async def prune(self, database: Database) -> int:
        """Delete the notifications sent more than ``retention`` seconds ago; how many."""
        sent_before = datetime.now(UTC) - timedelta(seconds=self.retention)
        return await prune_sent_notifications(database, sent_before=sent_before)

    async def _send(self, database: Database, event_id: str, data: bytes, attempt: int) -> bool:
        """Mail one claimed notification: True once mailed; a failure is recorded (due
        again after a capped backoff) and answers False."""
        message = BytesParser(policy=policy.default).parsebytes(data)
        try:
            await self.mailer.send(message, name=event_id)
        except Exception as exc:
            delay = min(self.retry_backoff * 2 ** (attempt - 1), self.retry_backoff_max)
            error = f"{type(exc).__name__}: {exc}"
            retry_at = datetime.now(UTC) + timedelta(seconds=delay)
            await notification_failed(database, event_id, error=error, retry_at=retry_at)
            log.warning(
                "notification not sent; will retry",
                event_id=event_id,
                attempt=attempt,
                delay=delay,
                error=error,
            )
            return False
        return True


def notification_handlers(outgoing: MailSender, *, sender: str) -> Handlers:
    """The ``notifications`` consumer group: each mail is decided in the consumer's
    transaction and sent by ``outgoing`` after it committed."""
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
        await _decide(uow, outgoing, sender=sender, event=event, template=_CONFIRMATION)

    @handlers.on(OrderRejected)
    async def mail_rejection(event: Envelope[OrderRejected], uow: UnitOfWork) -> None:
        await _decide(uow, outgoing, sender=sender, event=event, template=_REJECTION)

    return handlers


@dataclass(frozen=True)
class _MailTemplate:
    """A mail about an order; ``{order.<field>}`` placeholders are filled from the event."""

    subject: str
    text: str


_CONFIRMATION = _MailTemplate(
    subject="Your order {order.order_id} is confirmed",
    text=(
        "Good news: your order {order.order_id} is confirmed.\n"
        "Total: {order.total:.2f} {order.currency}.\n\nThank you for shopping at Mercato."
    ),
)
_REJECTION = _MailTemplate(
    subject="Your order {order.order_id} could not be accepted",
    text=(
        "We are sorry: your order {order.order_id} could not be accepted.\n"
        "Reason: {order.reason}.\nNothing was charged."
    ),
)


async def _decide(
    uow: UnitOfWork,
    outgoing: MailSender,
    *,
    sender: str,
    event: Envelope[OrderConfirmed] | Envelope[OrderRejected],
    template: _MailTemplate,
) -> None:
    """Render the mail and record it in the transaction of ``uow``; it leaves after commit."""
    order = event.data
    user_id = order.user_id
    recipient = await RecipientRepository(uow.session).get(user_id)
    if recipient is None:
        log.warning("no address for user; notification skipped", user_id=user_id, event_id=event.id)
        return
    message = compose(
        sender=sender,
        to=recipient.email,
        name=recipient.name,
        subject=template.subject.format(order=order),
        text=template.text.format(order=order),
        key=event.id,
        when=event.occurred_at,
    )
    if await NotificationRepository(uow.session).add(
        event_id=event.id, user_id=user_id, message=message.as_bytes(), now=datetime.now(UTC)
    ):
        uow.after_commit(outgoing.wake)
        log.info("notification decided", user_id=user_id, event_type=event.type, event_id=event.id)
