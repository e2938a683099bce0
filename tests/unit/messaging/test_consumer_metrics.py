"""Consumer metrics: the lag of each group sampled from its queue, and dead letters whose
type no handler knows kept under one label (on the memory broker, SQLite in memory)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from mercato.messaging import MESSAGING_MIGRATIONS, Consumer, Envelope, Handlers, Outbox
from mercato.messaging.brokers import BrokerUnavailable, Delivery, OutgoingMessage
from mercato.messaging.brokers.memory import MemoryBroker
from mercato.messaging.metrics import MessagingMetrics
from mercato.messaging.outbox import OutboxRelay
from mercato.messaging.runtime import MessagingRuntime
from mercato.platform.db import Database, UnitOfWork
from mercato.platform.migrations import upgrade
from support.messaging_apps import ThingHappened
from support.waiting import eventually

pytestmark = pytest.mark.anyio


@pytest.fixture
async def database() -> AsyncIterator[Database]:
    database = Database("sqlite+aiosqlite:///:memory:")
    await upgrade(database, [MESSAGING_MIGRATIONS])
    yield database
    await database.dispose()


def message(n: int, event_type: str = ThingHappened.event_type) -> OutgoingMessage:
    envelope = Envelope[ThingHappened](type=event_type, source="orders", data=ThingHappened(n=n))
    return OutgoingMessage(
        ref=n,
        event_id=envelope.id,
        event_type=envelope.type,
        body=envelope.model_dump_json().encode(),
    )


def gated_handlers(gate: asyncio.Event) -> Handlers:
    handlers = Handlers("products")

    @handlers.on(ThingHappened)
    async def wait_for_gate(event: Envelope[ThingHappened], uow: UnitOfWork) -> None:
        await gate.wait()

    return handlers


def runtime_of(database: Database, broker: MemoryBroker, consumer: Consumer) -> MessagingRuntime:
    relay = OutboxRelay(database, broker, service="products")
    return MessagingRuntime("products", broker, relay, Outbox("products"), consumer)


def lag(metrics: MessagingMetrics, queue: str = "products") -> float:
    return float(metrics.consumer_lag.labels("products", queue)._value.get())


async def test_the_lag_is_what_the_groups_queue_holds_unsettled(database: Database) -> None:
    broker, gate, metrics = MemoryBroker(), asyncio.Event(), MessagingMetrics(CollectorRegistry())
    consumer = Consumer(gated_handlers(gate), database, broker, service="products", prefetch=1)
    runtime = runtime_of(database, broker, consumer)
    await consumer.start()
    await broker.publish([message(n) for n in range(3)])

    await runtime.sample_lag(metrics)
    assert lag(metrics) == 3  # one in its handler, two waiting

    gate.set()
    await eventually(lambda: broker.groups["products"].queue.empty())
    await eventually(lambda: broker.groups["products"].in_flight == 0)
    await runtime.sample_lag(metrics)
    assert lag(metrics) == 0
    await consumer.stop(1.0)


async def test_a_broker_that_cannot_tell_leaves_the_last_sample(database: Database) -> None:
    broker, metrics = MemoryBroker(), MessagingMetrics(CollectorRegistry())
    consumer = Consumer(gated_handlers(asyncio.Event()), database, broker, service="products")
    runtime = runtime_of(database, broker, consumer)
    metrics.consumer_lag.labels("products", "products").set(7)

    async def unavailable() -> int:
        raise BrokerUnavailable("not connected")

    consumer.pending = unavailable  # type: ignore[method-assign]
    await runtime.sample_lag(metrics)
    assert lag(metrics) == 7


async def test_the_sampler_samples_at_once_and_stops_when_told(database: Database) -> None:
    broker, metrics, stop = MemoryBroker(), MessagingMetrics(CollectorRegistry()), asyncio.Event()
    consumer = Consumer(gated_handlers(asyncio.Event()), database, broker, service="products")
    metrics.consumer_lag.labels("products", "products").set(5)  # a stale sample
    sampler = asyncio.create_task(
        runtime_of(database, broker, consumer).sample_lag_until(stop, metrics, interval=3600)
    )
    await eventually(lambda: lag(metrics) == 0)  # nothing waits for this group
    stop.set()
    await asyncio.wait_for(sampler, 1.0)  # wakes from its hour-long pause at once


class HandedDelivery(Delivery):
    """A delivery handed to the consumer directly, remembering how it was settled."""

    def __init__(self, body: bytes) -> None:
        self.body, self.attempt, self.target = body, 1, None
        self.settled = ""

    async def ack(self) -> None:
        self.settled = "ack"

    async def retry(self, delay: float) -> None:
        self.settled = "retry"

    async def dead_letter(self, reason: str) -> None:
        self.settled = "dead_letter"

    async def release(self) -> None:
        self.settled = "release"


async def test_a_dead_letter_of_a_type_no_handler_knows_has_one_label(database: Database) -> None:
    metrics = MessagingMetrics(CollectorRegistry())
    consumer = Consumer(
        gated_handlers(asyncio.Event()),
        database,
        MemoryBroker(),
        service="products",
        metrics=metrics,
    )
    # As from a RabbitMQ queue still bound to types its group no longer handles.
    for n in range(3):
        delivery = HandedDelivery(message(n, f"test.stray_{n}").body)
        await consumer.handle(delivery)
        assert delivery.settled == "dead_letter"
    malformed = HandedDelivery(b"not json")
    await consumer.handle(malformed)

    dead = {
        sample.labels["type"]: sample.value
        for family in metrics.dead_lettered.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert dead == {"<unhandled>": 3, "<malformed>": 1}
