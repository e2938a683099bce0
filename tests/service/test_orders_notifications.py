"""The notification worker: order.confirmed / order.rejected -> a mail to the customer,
as an .eml file without SMTP_URL, or through an SMTP server."""

from __future__ import annotations

import asyncio
import email
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from email import policy
from pathlib import Path

import pytest

from mercato.auth.contracts import UserRegistered
from mercato.messaging import EventData, publish
from mercato.orders.contracts import OrderConfirmed, OrderRejected
from support.messaging import drain
from support.orders import OrdersHarness, eventually, orders_client, products_stub
from support.servers import free_port

pytestmark = pytest.mark.anyio


async def announce(orders: OrdersHarness, *events: EventData) -> None:
    async with orders.database.unit_of_work() as uow:
        for event in events:
            await publish(uow, event)
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
