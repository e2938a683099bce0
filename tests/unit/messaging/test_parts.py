"""The pieces of the messaging package on their own: envelope, backoff, handler registry,
broker choice, relay housekeeping."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from mercato.messaging import (
    MESSAGING_MIGRATIONS,
    Envelope,
    Handlers,
    Outbox,
    OutboxRelay,
    in_process_broker,
)
from mercato.messaging.brokers import Broker, OutgoingMessage, Subscription, create_broker
from mercato.messaging.brokers.memory import MemoryBroker
from mercato.messaging.consumer import backoff
from mercato.messaging.envelope import MalformedMessage, parse_raw, typed
from mercato.messaging.tables import inbox, outbox
from mercato.platform.db import Database, UnitOfWork
from mercato.platform.migrations import upgrade
from mercato.settings import load_settings
from support.messaging_apps import FollowUp, ThingHappened, publish_things

pytestmark = pytest.mark.anyio


def test_the_envelope_round_trips_with_its_typed_data() -> None:
    envelope = Envelope[ThingHappened](
        type="test.thing_happened", source="orders", request_id="r1", data=ThingHappened(n=3)
    )
    raw = parse_raw(envelope.model_dump_json().encode())
    again = typed(raw, ThingHappened)
    assert again == envelope
    assert set(envelope.model_dump()) == {
        "id",
        "type",
        "occurred_at",
        "source",
        "request_id",
        "traceparent",
        "data",
    }


def test_data_of_the_wrong_shape_is_malformed() -> None:
    raw = parse_raw(
        b'{"id": "1", "type": "test.thing_happened", "occurred_at": "2026-11-30T10:00:00Z",'
        b' "source": "orders", "data": {"n": "three"}}'
    )
    with pytest.raises(MalformedMessage, match="does not validate"):
        typed(raw, ThingHappened)


def test_a_naive_timestamp_is_not_an_envelope() -> None:
    with pytest.raises(MalformedMessage):
        parse_raw(
            b'{"id": "1", "type": "t", "occurred_at": "2026-11-30T10:00:00",'
            b' "source": "orders", "data": {}}'
        )


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff(a, base=0.5, cap=3.0) for a in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_handlers_declare_their_event_types_and_refuse_a_clash() -> None:
    handlers = Handlers("products")

    @handlers.on(ThingHappened)
    async def one(event: Envelope[ThingHappened], uow: UnitOfWork) -> None: ...

    @handlers.on(ThingHappened)
    async def two(event: Envelope[ThingHappened], uow: UnitOfWork) -> None: ...

    @handlers.on(FollowUp)
    async def three(event: Envelope[FollowUp], uow: UnitOfWork) -> None: ...

    assert handlers.event_types == ["test.follow_up", "test.thing_happened"]
    route = handlers.route("test.thing_happened")
    assert route is not None
    assert route.handlers == (one, two)

    class Impostor(ThingHappened):
        pass

    with pytest.raises(ValueError, match="already handled"):
        handlers.on(Impostor)(one)  # type: ignore[arg-type]


async def test_the_broker_follows_the_url() -> None:
    assert isinstance(create_broker(None), MemoryBroker)
    assert create_broker(None) is not create_broker(None)  # who runs the services shares one
    assert create_broker("amqp://guest:guest@localhost/").name == "rabbitmq"
    assert create_broker("kafka://localhost:9092").name == "kafka"
    with pytest.raises(ValueError, match="not supported"):
        create_broker("nats://localhost")


def test_only_the_memory_backend_has_a_broker_the_services_of_a_process_share() -> None:
    memory = load_settings(env_file=None, environment="testing")
    rabbit = load_settings(env_file=None, environment="testing", broker_url="amqp://h/")

    assert isinstance(in_process_broker(memory), MemoryBroker)
    assert in_process_broker(rabbit) is None


async def test_prune_drops_old_sent_rows_and_old_inbox_rows_only() -> None:
    database = Database("sqlite+aiosqlite:///:memory:")
    await upgrade(database, [MESSAGING_MIGRATIONS])
    old, now = datetime.now(UTC) - timedelta(days=40), datetime.now(UTC)
    row = {"event_type": "t", "payload": "{}", "created_at": old}
    async with database.unit_of_work() as uow:
        await uow.session.execute(insert(outbox).values(event_id="sent-old", sent_at=old, **row))
        await uow.session.execute(insert(outbox).values(event_id="sent-new", sent_at=now, **row))
        await uow.session.execute(insert(outbox).values(event_id="unsent-old", **row))
        for event_id, at in (("seen-old", old), ("seen-new", now)):
            await uow.session.execute(
                insert(inbox).values(consumer="c", event_id=event_id, event_type="t", handled_at=at)
            )
        await uow.commit()
    relay = OutboxRelay(
        database, MemoryBroker(), service="orders", retention=86_400, inbox_retention=30 * 86_400
    )
    assert await relay.prune() == 2
    async with database.unit_of_work(read_only=True) as uow:
        kept = set((await uow.session.execute(select(outbox.c.event_id))).scalars())
        seen = set((await uow.session.execute(select(inbox.c.event_id))).scalars())
        assert (await uow.session.execute(select(func.count()).select_from(outbox))).scalar() == 2
    assert kept == {"sent-new", "unsent-old"}
    assert seen == {"seen-new"}
    count, age = await relay.backlog()
    assert count == 1
    assert age > 39 * 86_400
    await database.dispose()


async def test_one_relay_per_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/orders.db"
    first_db, second_db = Database(url), Database(url)
    await upgrade(first_db, [MESSAGING_MIGRATIONS])
    await publish_things(first_db, range(3))
    broker = RecordingBroker()
    first = OutboxRelay(first_db, broker, service="orders")
    second = OutboxRelay(second_db, broker, service="orders")
    assert await first.run_once() == 3  # takes the file's relay lock
    await publish_things(first_db, range(3, 5))
    assert await second.run_once() == 0  # another relay owns this file
    await first.stop()  # flushes what is committed (3, 4), then releases the lock
    await publish_things(first_db, [5])
    assert await second.run_once() == 1
    await second.stop()
    assert broker.sent == [0, 1, 2, 3, 4, 5]
    await first_db.dispose()
    await second_db.dispose()


class RecordingBroker(Broker):
    """Confirms everything at once and remembers the order of what it got."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    async def publish(self, messages: Sequence[OutgoingMessage], settled: Any = None) -> None:
        self.sent += [json.loads(m.body)["data"]["n"] for m in messages]

    def _new_subscription(self, group: Any) -> Subscription:
        raise NotImplementedError

    async def ping(self) -> None:
        return None


async def test_an_outbox_names_its_service_and_wakes_its_relay_once_committed() -> None:
    database = Database("sqlite+aiosqlite:///:memory:")
    await upgrade(database, [MESSAGING_MIGRATIONS])
    publisher = Outbox("orders")
    relay = OutboxRelay(database, MemoryBroker(), service="orders")
    publisher.relay = relay
    try:
        async with database.unit_of_work() as uow:
            envelope = await publisher.publish(uow, ThingHappened(n=1), key="1")
            assert not relay._wake.is_set()  # nothing to send before the commit
            await uow.commit()
        assert relay._wake.is_set()
        assert envelope.source == "orders"

        relay._wake.clear()
        async with database.unit_of_work() as uow:  # left without commit: rolled back
            await publisher.publish(uow, ThingHappened(n=2), key="2")
        assert not relay._wake.is_set()
        async with database.unit_of_work(read_only=True) as uow:
            rows = (await uow.session.execute(select(outbox.c.payload))).all()
        assert [json.loads(row.payload)["data"]["n"] for row in rows] == [1]
    finally:
        await database.dispose()
