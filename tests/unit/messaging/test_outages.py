"""A dependency outage is not a poison message: consumers pause and resume, a dead letter
that cannot be recorded is never dropped, and the relay picks up again by itself.

The database is real (SQLite in memory) behind :class:`FlakyDatabase`, which refuses every
unit of work while ``down``, as a PostgreSQL that stopped answering would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError

from mercato.messaging import MESSAGING_MIGRATIONS, Consumer, Envelope, Handlers, OutboxRelay
from mercato.messaging.brokers import BrokerUnavailable, OutgoingMessage
from mercato.messaging.brokers.memory import MemoryBroker
from mercato.messaging.metrics import MessagingMetrics
from mercato.messaging.tables import dead_letters, inbox
from mercato.messaging.transient import is_transient
from mercato.platform.db import Database, UnitOfWork
from mercato.platform.http import UpstreamUnavailable
from mercato.platform.migrations import upgrade
from support.messaging_apps import ThingHappened, publish_things
from support.waiting import eventually

pytestmark = pytest.mark.anyio


def refused() -> OperationalError:
    return OperationalError("connect", {}, ConnectionRefusedError(111, "Connection refused"))


class FlakyDatabase:
    """A real database that refuses every unit of work while ``down``."""

    def __init__(self, real: Database) -> None:
        self.real, self.down, self.refusals = real, False, 0

    def unit_of_work(self, **options: Any) -> Any:
        if self.down:
            self.refusals += 1
            raise refused()
        return self.real.unit_of_work(**options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture
async def database() -> AsyncIterator[FlakyDatabase]:
    real = Database("sqlite+aiosqlite:///:memory:")
    await upgrade(real, [MESSAGING_MIGRATIONS])
    yield FlakyDatabase(real)
    await real.dispose()


def thing(n: int) -> OutgoingMessage:
    envelope = Envelope[ThingHappened](
        type="test.thing_happened", source="orders", data=ThingHappened(n=n)
    )
    body = envelope.model_dump_json().encode()
    return OutgoingMessage(ref=n, event_id=envelope.id, event_type=envelope.type, body=body)


async def rows(database: FlakyDatabase, table: Any) -> int:
    async with database.real.unit_of_work(read_only=True) as uow:
        return int((await uow.session.execute(select(func.count()).select_from(table))).scalar())


def consumer_of(database: FlakyDatabase, broker: MemoryBroker, handlers: Handlers) -> Consumer:
    return Consumer(
        handlers,
        database,  # type: ignore[arg-type]
        broker,
        service="products",
        metrics=MessagingMetrics(CollectorRegistry()),
        max_attempts=2,
        retry_backoff=0.001,
        retry_backoff_max=0.01,
        pause_backoff_max=0.01,
        prefetch=4,
    )


def paused_gauge(consumer: Consumer) -> float:
    assert consumer.metrics is not None
    return float(consumer.metrics.consumer_paused.labels("products", "products")._value.get())


def recording_handlers(handled: list[int]) -> Handlers:
    handlers = Handlers("products")

    @handlers.on(ThingHappened)
    async def record(event: Envelope[ThingHappened], uow: UnitOfWork) -> None:
        handled.append(event.data.n)

    return handlers


async def test_a_database_outage_pauses_the_consumer_without_spending_attempts(
    database: FlakyDatabase,
) -> None:
    broker, handled = MemoryBroker(), []
    consumer = consumer_of(database, broker, recording_handlers(handled))
    await consumer.start()
    database.down = True
    await broker.publish([thing(n) for n in range(3)])
    # Far more failed tries than MESSAGING_MAX_ATTEMPTS (2): still nothing dead-lettered.
    await eventually(lambda: database.refusals >= 10)
    assert consumer.paused
    assert "OperationalError" in (consumer.pause_state() or "")
    assert paused_gauge(consumer) == 1
    assert broker.groups["products"].dead == []
    assert await consumer.pending() == 3  # every message waits, none is lost

    database.down = False  # the database is back: it resumes by itself
    await eventually(lambda: sorted(handled) == [0, 1, 2])
    await eventually(lambda: not consumer.paused)
    assert paused_gauge(consumer) == 0
    assert await rows(database, dead_letters) == 0
    assert await rows(database, inbox) == 3
    await consumer.stop(1.0)


async def test_an_upstream_answering_503_pauses_too_and_a_domain_error_does_not(
    database: FlakyDatabase,
) -> None:
    broker = MemoryBroker()
    upstream_down, calls = True, []
    handlers = Handlers("products")

    @handlers.on(ThingHappened)
    async def call_upstream(event: Envelope[ThingHappened], uow: UnitOfWork) -> None:
        calls.append(event.data.n)
        if event.data.n == 1:
            raise ValueError("this order makes no sense")  # the message's own fault
        if upstream_down:
            raise UpstreamUnavailable("products")

    consumer = consumer_of(database, broker, handlers)
    await consumer.start()
    await broker.publish([thing(0)])
    await eventually(lambda: len(calls) >= 5)
    assert consumer.paused
    upstream_down = False
    await eventually(lambda: not consumer.paused)
    await broker.publish([thing(1)])
    await eventually(lambda: len(broker.groups["products"].dead) == 1)  # after 2 attempts
    assert calls.count(1) == 2
    assert await rows(database, dead_letters) == 1
    assert await rows(database, inbox) == 1  # thing 0
    await consumer.stop(1.0)


async def test_a_dead_letter_that_cannot_be_recorded_is_kept_until_it_can(
    database: FlakyDatabase,
) -> None:
    broker = MemoryBroker()
    consumer = consumer_of(database, broker, recording_handlers([]))
    await consumer.start()
    database.down = True
    broker_message = OutgoingMessage(
        ref=1, event_id="e1", event_type="test.thing_happened", body=b"not an envelope"
    )
    await broker.publish([broker_message])
    await eventually(lambda: database.refusals >= 5)
    assert broker.groups["products"].dead == []  # not handed to the broker's DLQ unrecorded
    assert await consumer.pending() == 1
    database.down = False
    await eventually(lambda: len(broker.groups["products"].dead) == 1)
    assert await rows(database, dead_letters) == 1
    await consumer.stop(1.0)


async def test_a_consumer_stopped_during_an_outage_gives_its_messages_back(
    database: FlakyDatabase,
) -> None:
    broker, handled = MemoryBroker(), []
    first = consumer_of(database, broker, recording_handlers(handled))
    await first.start()
    database.down = True
    await broker.publish([thing(n) for n in range(3)])
    await eventually(lambda: first.paused)
    await first.stop(0.5)
    assert broker.groups["products"].queue.qsize() == 3  # back in the group's queue
    database.down = False
    second = consumer_of(database, broker, recording_handlers(handled))
    await second.start()
    await eventually(lambda: sorted(handled) == [0, 1, 2])
    assert broker.groups["products"].dead == []
    await second.stop(1.0)


async def test_the_relay_resumes_by_itself_when_the_database_returns(
    database: FlakyDatabase,
) -> None:
    broker = RecordingBroker()
    await publish_things(database.real, range(5))
    relay = OutboxRelay(
        database,  # type: ignore[arg-type]
        broker,
        service="orders",
        poll_interval=0.01,
        max_backoff=0.05,
    )
    database.down = True
    await relay.start()
    await eventually(lambda: database.refusals >= 5)
    assert broker.sent == []
    database.down = False
    await eventually(lambda: broker.sent == [0, 1, 2, 3, 4])
    await publish_things(database.real, [5])
    relay.wake()
    await eventually(lambda: broker.sent == [0, 1, 2, 3, 4, 5])
    await relay.stop(flush_timeout=1.0)


async def test_a_commit_after_a_database_outage_ends_the_relay_backoff(
    database: FlakyDatabase,
) -> None:
    broker = RecordingBroker()
    relay = OutboxRelay(
        database,  # type: ignore[arg-type]
        broker,
        service="orders",
        poll_interval=100.0,  # a backoff that no test would wait for
        max_backoff=1000.0,
    )
    database.down = True
    await relay.start()
    await eventually(lambda: database.refusals >= 1)  # failed once: backing off now
    database.down = False
    await publish_things(database.real, [7])
    relay.wake()  # what a commit that published does
    await eventually(lambda: broker.sent == [7])
    await relay.stop(flush_timeout=1.0)


def test_the_relay_backoff_is_capped_and_jittered() -> None:
    relay = OutboxRelay.__new__(OutboxRelay)
    relay.poll_interval, relay.max_backoff = 1.0, 3.0
    delays = [relay.backoff(failures) for failures in (1, 5, 50, 500)]
    assert all(0 < delay <= 3.0 for delay in delays)
    assert len({relay.backoff(50) for _ in range(20)}) > 1


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (refused(), True),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (OSError("Multiple exceptions: [Errno 111] Connect call failed"), True),
        (BrokerUnavailable("no confirm"), True),
        (UpstreamUnavailable("products"), True),
        (IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed")), False),
        (ValueError("bad quantity"), False),
        (FileNotFoundError("template.html"), False),
        (RuntimeError("wrapped"), False),
    ],
)
def test_what_counts_as_a_dependency_being_away(error: Exception, transient: bool) -> None:
    assert is_transient(error) is transient


def test_a_wrapped_outage_is_still_an_outage() -> None:
    wrapped = RuntimeError("could not reserve stock")
    wrapped.__cause__ = ConnectionRefusedError(111, "Connection refused")
    assert is_transient(wrapped)
    assert not is_transient(RuntimeError("could not reserve stock"))


class RecordingBroker(MemoryBroker):
    """Confirms at once (no consumer groups): remembers the numbers it was given."""

    settles_on_delivery = False

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[int] = []

    async def publish(self, messages: Any, settled: Any = None) -> None:
        import json

        self.sent += [json.loads(m.body)["data"]["n"] for m in messages]
