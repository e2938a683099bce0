"""The whole path on the memory broker and SQLite: outbox -> relay -> broker -> inbox."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert, select

from mercato.messaging import MESSAGING_MIGRATIONS, Consumer, OutboxRelay
from mercato.messaging.brokers import Delivery
from mercato.messaging.brokers.memory import MemoryBroker
from mercato.messaging.tables import dead_letters, outbox
from mercato.platform.db import Database
from mercato.platform.migrations import upgrade
from support.messaging import drain
from support.messaging_apps import (
    Behaviour,
    consumer_app,
    dead_letter_count,
    distinct_effects,
    effect_count,
    inbox_count,
    messaging_settings,
    producer_app,
    publish_things,
    running,
    unsent_count,
)
from support.waiting import eventually

pytestmark = pytest.mark.anyio


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test")


async def test_a_committed_event_is_handled_once_with_its_request_id() -> None:
    broker = MemoryBroker()
    behaviour = Behaviour()
    producer = producer_app(messaging_settings(), broker=broker)
    consumer = consumer_app(messaging_settings(), behaviour, broker=broker)
    async with running(consumer, producer), client(producer) as http:
        response = await http.post("/things?n=1", headers={"X-Request-ID": "req-42"})
        assert response.status_code == 200
        await drain(producer, consumer)
        db = consumer.state.context.db
        assert await effect_count(db) == 1
        assert await inbox_count(db) == 1
        (event,) = behaviour.seen
        assert event.id == response.json()["id"]
        assert event.type == "test.thing_happened"
        assert event.source == "orders"
        assert event.request_id == "req-42"
        assert event.occurred_at.tzinfo is not None
        assert await unsent_count(producer.state.context.db) == 0


async def test_a_rolled_back_transaction_publishes_nothing() -> None:
    broker = MemoryBroker()
    behaviour = Behaviour()
    producer = producer_app(messaging_settings(), broker=broker)
    consumer = consumer_app(messaging_settings(), behaviour, broker=broker)
    async with running(consumer, producer), client(producer) as http:
        assert (await http.post("/things?n=1&rollback=true")).status_code == 200
        assert (await http.post("/things?n=2")).status_code == 200
        await drain(producer, consumer)
        assert [event.data.n for event in behaviour.seen] == [2]
        async with producer.state.context.db.unit_of_work(read_only=True) as uow:
            rows = (await uow.session.execute(select(outbox.c.payload))).all()
        assert len(rows) == 1


async def test_a_duplicate_event_id_is_acked_and_skipped() -> None:
    broker = MemoryBroker()
    behaviour = Behaviour()
    producer = producer_app(messaging_settings(), broker=broker)
    consumer = consumer_app(messaging_settings(), behaviour, broker=broker)
    async with running(consumer, producer):
        db = producer.state.context.db
        await publish_things(db, [7])
        await drain(producer, consumer)
        # The relay sends the very same envelope again (as after a crash before marking).
        async with db.unit_of_work() as uow:
            row = (await uow.session.execute(select(outbox))).mappings().one()
            copy = {k: v for k, v in row.items() if k not in {"seq", "sent_at"}}
            await uow.session.execute(insert(outbox).values(**copy))
            await uow.commit()
        await drain(producer, consumer)
        assert behaviour.calls == {7: 1}
        assert await effect_count(consumer.state.context.db) == 1
        assert await unsent_count(db) == 0


async def test_a_failing_handler_is_retried_until_it_succeeds() -> None:
    broker = MemoryBroker()
    behaviour = Behaviour(fail_times={3: 2})
    producer = producer_app(messaging_settings(), broker=broker)
    consumer = consumer_app(messaging_settings(), behaviour, broker=broker)
    async with running(consumer, producer):
        await publish_things(producer.state.context.db, [3])
        await drain(producer, consumer)
        assert behaviour.calls == {3: 3}
        assert await effect_count(consumer.state.context.db) == 1
        assert await dead_letter_count(consumer.state.context.db) == 0


async def test_a_poison_message_is_dead_lettered_and_the_others_keep_flowing() -> None:
    broker = MemoryBroker()
    behaviour = Behaviour(always_fail={5})
    settings = messaging_settings(messaging_max_attempts=3)
    producer = producer_app(settings, broker=broker)
    consumer = consumer_app(settings, behaviour, broker=broker)
    async with running(consumer, producer):
        await publish_things(producer.state.context.db, range(1, 11))
        await drain(producer, consumer)
        db = consumer.state.context.db
        assert behaviour.calls[5] == 3
        assert await effect_count(db) == 9
        async with db.unit_of_work(read_only=True) as uow:
            (dead,) = (await uow.session.execute(select(dead_letters))).mappings().all()
        assert dead["attempts"] == 3
        assert dead["event_type"] == "test.thing_happened"
        assert "always fails" in dead["error"]
        assert await unsent_count(producer.state.context.db) == 0


@pytest.mark.parametrize(
    "payload",
    [
        "not json at all",
        '{"id": "x", "type": "test.thing_happened"}',  # no data, no occurred_at
        '{"id": "x1", "type": "test.thing_happened", "occurred_at": "2026-11-30T10:00:00Z",'
        ' "source": "orders", "data": {"n": "not a number"}}',
        '{"id": "x2", "type": "test.unknown", "occurred_at": "2026-11-30T10:00:00Z",'
        ' "source": "orders", "data": {}}',
    ],
)
async def test_malformed_or_unknown_messages_go_to_the_dead_letters(payload: str) -> None:
    broker = MemoryBroker()
    behaviour = Behaviour()
    producer = producer_app(messaging_settings(), broker=broker)
    consumer = consumer_app(messaging_settings(), behaviour, broker=broker)
    async with running(consumer, producer):
        db = producer.state.context.db
        async with db.unit_of_work() as uow:
            await uow.session.execute(
                insert(outbox).values(
                    event_id="x",
                    event_type="test.thing_happened",
                    payload=payload,
                    created_at=datetime.now(UTC),
                )
            )
            await uow.commit()
        await publish_things(db, [1])
        await drain(producer, consumer)
        assert await dead_letter_count(consumer.state.context.db) == 1
        assert await effect_count(consumer.state.context.db) == 1
        assert behaviour.calls == {1: 1}


async def test_events_committed_by_a_process_that_died_are_sent_at_next_start(
    tmp_path: Path,
) -> None:
    broker = MemoryBroker()
    url = f"sqlite+aiosqlite:///{tmp_path}/orders.db"
    # The first process commits 20 events and is killed before any relay ran.
    database = Database(url)
    await upgrade(database, [MESSAGING_MIGRATIONS])
    await publish_things(database, range(20))
    await database.dispose()
    behaviour = Behaviour()
    producer = producer_app(messaging_settings(orders_database_url=url), broker=broker)
    consumer = consumer_app(messaging_settings(), behaviour, broker=broker)
    async with running(consumer, producer):
        await drain(producer, consumer)
        assert await unsent_count(producer.state.context.db) == 0
        assert sorted(event.data.n for event in behaviour.seen) == list(range(20))


async def test_a_handler_can_publish_and_the_request_id_follows() -> None:
    broker = MemoryBroker()
    behaviour = Behaviour(follow_up=True)
    producer = producer_app(messaging_settings(), broker=broker)
    consumer = consumer_app(messaging_settings(), behaviour, broker=broker)
    async with running(consumer, producer), client(producer) as http:
        await http.post("/things?n=9", headers={"X-Request-ID": "trace-me"})
        await drain(producer, consumer)
        async with consumer.state.context.db.unit_of_work(read_only=True) as uow:
            (payload,) = (await uow.session.execute(select(outbox.c.payload))).scalars().all()
        assert '"request_id":"trace-me"' in payload
        assert '"source":"products"' in payload


async def test_memory_rows_stay_unsent_until_the_consumer_handled_them() -> None:
    broker = MemoryBroker()
    gate = asyncio.Event()
    behaviour = Behaviour(block=gate)
    producer = producer_app(messaging_settings(), broker=broker)
    consumer = consumer_app(messaging_settings(), behaviour, broker=broker)
    async with running(consumer, producer):
        db = producer.state.context.db
        await publish_things(db, [1, 2])
        await eventually(lambda: behaviour.calls)
        await producer.state.messaging.relay.run_once()
        assert await unsent_count(db) == 2  # in flight: a crash now would resend them
        gate.set()
        await drain(producer, consumer)
        assert await unsent_count(db) == 0
        assert await distinct_effects(consumer.state.context.db) == 2


async def test_the_traceparent_of_the_request_travels_in_the_envelope() -> None:
    broker = MemoryBroker()
    behaviour = Behaviour(follow_up=True)
    producer = producer_app(messaging_settings(), broker=broker)
    consumer = consumer_app(messaging_settings(), behaviour, broker=broker)
    trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with running(consumer, producer), client(producer) as http:
        await http.post("/things?n=1", headers={"traceparent": trace})
        await http.post("/things?n=2", headers={"traceparent": "not-a-trace"})
        await drain(producer, consumer)
        traces = {event.data.n: event.traceparent for event in behaviour.seen}
        async with consumer.state.context.db.unit_of_work(read_only=True) as uow:
            payloads = (await uow.session.execute(select(outbox.c.payload))).scalars().all()
    assert traces == {1: trace, 2: None}
    assert sum(trace in payload for payload in payloads) == 1  # the follow-up of event 1


async def test_an_attached_consumer_group_counts_as_pending() -> None:
    broker = MemoryBroker()

    class Busy:
        async def pending(self) -> int:
            return 7

    producer = producer_app(messaging_settings(), broker=broker)
    consumer = consumer_app(messaging_settings(), Behaviour(), broker=broker)
    async with running(consumer, producer):
        await publish_things(producer.state.context.db, range(3))
        await drain(producer, consumer)
        runtime = consumer.state.messaging
        assert await runtime.pending() == 0
        busy = cast(Consumer, Busy())
        runtime.attach(busy)
        assert await runtime.pending() == 7
        with pytest.raises(TimeoutError, match="pending"):
            await drain(producer, consumer, within=0.2)
        runtime.detach(busy)
        assert await runtime.pending() == 0


async def test_the_relay_keeps_a_bounded_number_of_rows_unsettled_on_the_memory_broker(
    tmp_path: Path,
) -> None:
    """A slow group does not get the whole outbox queued in memory: the relay hands over at
    most ``max_in_flight`` unsettled rows, then the rest as they settle, each exactly once."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}", schema="orders")
    await upgrade(database, [MESSAGING_MIGRATIONS])
    broker = MemoryBroker()
    release = asyncio.Event()
    handled: list[bytes] = []

    async def slow(delivery: Delivery) -> None:
        await release.wait()
        handled.append(delivery.body)
        await delivery.ack()

    subscription = await broker.subscribe("slow", ["#"], slow, prefetch=2)
    relay = OutboxRelay(database, broker, service="orders", batch_size=5)
    try:
        await publish_things(database, range(30))
        for _ in range(10):
            await relay.run_once()
        assert await subscription.pending() == relay.sent_when.max_in_flight == 20

        release.set()
        for _ in range(20):
            await relay.run_once()
            await asyncio.sleep(0.01)
        await eventually(lambda: len(handled) == 30)
        await relay.run_once()
        assert len(set(handled)) == 30
        assert await unsent_count(database) == 0
    finally:
        await relay.stop(flush_timeout=1.0)  # releases the relay's file lock
        await subscription.stop(1.0)
        await database.dispose()
