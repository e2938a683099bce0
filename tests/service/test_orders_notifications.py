"""The notification worker: order.confirmed / order.rejected -> a mail to the customer,
as an .eml file without SMTP_URL, or through an SMTP server."""

from __future__ import annotations

import asyncio
import email
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from mercato.auth.contracts import UserRegistered
from mercato.messaging import Envelope, EventData, Outbox
from mercato.orders.app import MIGRATIONS, create_app
from mercato.orders.contracts import OrderConfirmed, OrderRejected
from mercato.orders.models import Base, NotificationRow
from mercato.orders.notifications import MailSender, notification_handlers
from mercato.orders.repository import NotificationRepository
from support.messaging import drain
from support.migrations import assert_migrations_match
from support.orders import (
    OrdersHarness,
    orders_client,
    orders_settings,
    products_stub,
)
from support.servers import free_port
from support.waiting import eventually

pytestmark = pytest.mark.anyio


async def announce(orders: OrdersHarness, *events: EventData) -> None:
    async with orders.database.unit_of_work() as uow:
        for event in events:
            await Outbox("orders").publish(uow, event)
        await uow.commit()
    await drain(orders.app)


def registered(user_id: str, mail: str) -> UserRegistered:
    return UserRegistered(
        user_id=user_id,
        username="ann",
        email=mail,
        full_name="Ann Lee",
        created_at=datetime.now(UTC),
    )


async def test_confirmed_and_rejected_orders_are_mailed_as_eml_files(tmp_path: Path) -> None:
    async with products_stub() as products, orders_client(tmp_path, products.url) as orders:
        await announce(orders, registered("u1", "ann@example.com"))
        await announce(
            orders,
            OrderConfirmed(order_id="o-1", user_id="u1", total=Decimal("12.50"), currency="USD"),
            OrderRejected(order_id="o-2", user_id="u1", reason="only 0 left of Mug"),
            OrderConfirmed(order_id="o-3", user_id="nobody", total=Decimal(1), currency="USD"),
        )
        outbox = tmp_path / "outbox-mail"

        async def two_files() -> bool:
            return outbox.is_dir() and len(list(outbox.glob("*.eml"))) == 2

        await eventually(two_files)
        mails = [
            email.message_from_bytes(p.read_bytes(), policy=policy.default)
            for p in outbox.glob("*.eml")
        ]
    by_subject = {str(m["Subject"]): m for m in mails}
    confirmed = by_subject["Your order o-1 is confirmed"]
    assert confirmed["To"] == "Ann Lee <ann@example.com>"
    assert "12.50 USD" in confirmed.get_content()
    rejected = by_subject["Your order o-2 could not be accepted"]
    assert "only 0 left of Mug" in rejected.get_content()


class SmtpSink:
    """A minimal SMTP server that keeps what it receives (the stdlib has no server now)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[bytes] = []
        self.received = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink ready\r\n")
        while line := await reader.readline():
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb in {b"EHLO", b"HELO"}:
                writer.write(b"250 sink\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go on\r\n")
                await writer.drain()
                data = b""
                while (chunk := await reader.readline()) not in {b".\r\n", b""}:
                    data += chunk
                self.messages.append(data)
                self.received.set()
                writer.write(b"250 queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpSink]:
    sink = SmtpSink()
    await sink.start()
    try:
        yield sink
    finally:
        await sink.stop()


async def test_with_smtp_url_mail_goes_to_the_smtp_server(tmp_path: Path, smtp: SmtpSink) -> None:
    async with (
        products_stub() as products,
        orders_client(tmp_path, products.url, smtp_url=f"smtp://127.0.0.1:{smtp.port}") as orders,
    ):
        await announce(orders, registered("u1", "ann@example.com"))
        await announce(
            orders, OrderConfirmed(order_id="o-9", user_id="u1", total=Decimal("3"), currency="USD")
        )
        await asyncio.wait_for(smtp.received.wait(), 10)
    mail = email.message_from_bytes(smtp.messages[0], policy=policy.default)
    assert mail["Subject"] == "Your order o-9 is confirmed"
    assert mail["To"] == "Ann Lee <ann@example.com>"
    assert not (tmp_path / "outbox-mail").exists()


async def test_the_standalone_worker_mails_and_serves_health(tmp_path: Path) -> None:
    import httpx

    from mercato.orders.app import create_worker_app
    from support.orders import orders_settings

    settings = orders_settings(tmp_path, "http://127.0.0.1:9")
    worker = create_worker_app(settings)
    async with (
        worker.router.lifespan_context(worker),
        httpx.AsyncClient(transport=httpx.ASGITransport(worker), base_url="http://w") as client,
    ):
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.post("/orders", json={})).status_code == 404  # no orders routes
        harness = OrdersHarness(worker, client, settings)
        await announce(harness, registered("u1", "ann@example.com"))
        await announce(
            harness, OrderConfirmed(order_id="o-5", user_id="u1", total=Decimal(1), currency="USD")
        )
        outbox = tmp_path / "outbox-mail"

        async def one_file() -> bool:
            return outbox.is_dir() and len(list(outbox.glob("*.eml"))) == 1

        await eventually(one_file)


def test_the_worker_command_exists() -> None:
    from typer.testing import CliRunner

    from mercato.cli import app

    result = CliRunner().invoke(app, ["worker", "--help"])
    assert result.exit_code == 0
    assert "NOTIFICATIONS_IN_PROCESS" in result.output


async def test_the_notifications_group_is_measured_and_drained_like_the_saga(
    tmp_path: Path,
) -> None:
    async with products_stub() as products, orders_client(tmp_path, products.url) as orders:
        runtime = orders.app.state.messaging
        assert orders.app.state.notifications in runtime.consumers  # drain() and /readyz see it

        await announce(orders, registered("u1", "ann@example.com"))
        metrics = (await orders.client.get("/metrics")).text

    consumed = [
        line
        for line in metrics.splitlines()
        if line.startswith("messaging_events_consumed_total{") and "notifications" in line
    ]
    assert len(consumed) == 1
    assert 'type="user.registered"' in consumed[0]
    assert consumed[0].endswith(" 1.0")


@dataclass(frozen=True)
class Notification:
    event_id: str
    attempts: int
    last_error: str | None
    sent: bool


async def notifications_of(orders: OrdersHarness) -> list[Notification]:
    async with orders.database.unit_of_work(read_only=True) as uow:
        rows = (await uow.session.execute(select(NotificationRow))).scalars()
        return [
            Notification(row.event_id, row.attempts, row.last_error, row.sent_at is not None)
            for row in rows
        ]


class WitnessMailer:
    """Keeps each message, and whether the consumer's transaction that decided it (its inbox
    row) and the sender's claim of it were committed when it was sent: read from another
    connection, which sees committed data only."""

    def __init__(self, database_file: Path) -> None:
        self.database_file = database_file
        self.sent: list[EmailMessage] = []
        self.committed_when_sent: list[bool] = []

    async def send(self, message: EmailMessage, *, name: str) -> None:
        with sqlite3.connect(self.database_file) as connection:
            inbox = connection.execute(
                "SELECT 1 FROM messaging_inbox WHERE consumer = 'notifications' AND event_id = ?",
                (name,),
            ).fetchone()
            claimed = connection.execute(
                "SELECT attempts FROM notifications WHERE event_id = ?", (name,)
            ).fetchone()
        self.committed_when_sent.append(inbox is not None and claimed == (1,))
        self.sent.append(message)


@asynccontextmanager
async def orders_mailing_to(
    tmp_path: Path, mailer: Any, **overrides: Any
) -> AsyncIterator[OrdersHarness]:
    settings = orders_settings(tmp_path, "http://127.0.0.1:9", **overrides)
    app = create_app(settings, mailer=mailer)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client,
    ):
        yield OrdersHarness(app, client, settings)


async def test_a_mail_is_sent_only_after_the_transaction_that_decided_it_committed(
    tmp_path: Path,
) -> None:
    mailer = WitnessMailer(tmp_path / "orders.db")
    async with orders_mailing_to(tmp_path, mailer) as orders:
        await announce(orders, registered("u1", "zoe@example.com"))
        await announce(
            orders, OrderConfirmed(order_id="o-1", user_id="u1", total=Decimal(2), currency="EUR")
        )

        async def one_sent() -> bool:
            return len(mailer.sent) == 1

        await eventually(one_sent)
    assert mailer.committed_when_sent == [True]
    assert mailer.sent[0]["Subject"] == "Your order o-1 is confirmed"


async def test_a_redelivered_event_is_mailed_once(tmp_path: Path) -> None:
    mailer = WitnessMailer(tmp_path / "orders.db")
    async with orders_mailing_to(tmp_path, mailer) as orders:
        await announce(orders, registered("u1", "ann@example.com"))
        # The handler of the notifications group, given the same event twice (as a broker
        # redelivers it), each time in a transaction of its own.
        outgoing = MailSender(mailer, retry_backoff=0.01, retry_backoff_max=0.05, retention=60)
        handlers = notification_handlers(outgoing, sender="shop@example.com")
        route = handlers.route(OrderConfirmed.event_type)
        assert route is not None
        event = Envelope[OrderConfirmed](
            type=OrderConfirmed.event_type,
            source="orders",
            data=OrderConfirmed(order_id="o-7", user_id="u1", total=Decimal(5), currency="USD"),
        )
        for _ in range(2):
            async with orders.database.unit_of_work() as uow:
                for handler in route.handlers:
                    await handler(event, uow)
                await uow.commit()
            await outgoing.send_due(orders.database)
        rows = await notifications_of(orders)
    assert [m["Subject"] for m in mailer.sent] == ["Your order o-7 is confirmed"]
    assert rows == [Notification(event.id, attempts=1, last_error=None, sent=True)]


async def test_a_mail_the_smtp_server_refused_is_sent_once_when_it_is_back(
    tmp_path: Path,
) -> None:
    smtp = SmtpSink()  # not listening yet: the SMTP server is down
    async with (
        products_stub() as products,
        orders_client(
            tmp_path,
            products.url,
            smtp_url=f"smtp://127.0.0.1:{smtp.port}",
            messaging_retry_backoff=0.01,
            messaging_retry_backoff_max=0.05,
        ) as orders,
    ):
        await announce(orders, registered("u1", "ann@example.com"))
        await announce(
            orders, OrderConfirmed(order_id="o-4", user_id="u1", total=Decimal(4), currency="USD")
        )

        async def tried_and_failed() -> bool:
            rows = await notifications_of(orders)
            return len(rows) == 1 and rows[0].attempts >= 2 and rows[0].last_error is not None

        await eventually(tried_and_failed)
        assert (await orders.client.get("/readyz")).status_code == 200  # the consumer goes on
        await smtp.start()
        try:

            async def sent() -> bool:
                rows = await notifications_of(orders)
                return rows[0].sent

            await eventually(sent)
        finally:
            await smtp.stop()
    assert len(smtp.messages) == 1
    mail = email.message_from_bytes(smtp.messages[0], policy=policy.default)
    assert mail["Subject"] == "Your order o-4 is confirmed"


async def test_the_orders_migrations_create_the_notifications_table_the_model_declares() -> None:
    await assert_migrations_match("sqlite+aiosqlite:///:memory:", MIGRATIONS[:1], Base.metadata)


async def test_sent_notifications_are_pruned_after_the_retention_and_unsent_ones_kept(
    tmp_path: Path,
) -> None:
    mailer = WitnessMailer(tmp_path / "orders.db")
    # Without the service's own sender, which could mail "not-sent-yet" meanwhile.
    async with orders_mailing_to(tmp_path, mailer, notifications_in_process=False) as orders:
        outgoing = MailSender(mailer, retry_backoff=0.01, retry_backoff_max=0.05, retention=0)
        now = datetime.now(UTC)
        async with orders.database.unit_of_work() as uow:
            for event_id in ("sent-long-ago", "not-sent-yet"):
                await NotificationRepository(uow.session).add(
                    event_id=event_id, user_id="u1", message=b"Subject: x\r\n\r\nx", now=now
                )
            await NotificationRepository(uow.session).sent("sent-long-ago", now=now)
            await uow.commit()

        assert await outgoing.prune(orders.database) == 1
        assert [n.event_id for n in await notifications_of(orders)] == ["not-sent-yet"]
