"""The messaging path on a real RabbitMQ (and PostgreSQL): outbox -> exchange -> queue -> inbox."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import httpx
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import generate_latest

from mercato.messaging import MESSAGING_MIGRATIONS, OutboxRelay
from mercato.messaging.brokers import BrokerOptions, BrokerUnavailable
from mercato.messaging.brokers.rabbitmq import RabbitBroker, dead_letter_queue_name
from mercato.platform.db import Database
from mercato.platform.migrations import upgrade
from mercato.platform.telemetry import Tracing
from mercato.settings import Settings
from support.messaging import drain
from support.messaging_apps import (
    Behaviour,
    ThingHappened,
    consumer_app,
    dead_letter_count,
    delete_rabbit_topology,
    effect_count,
    inbox_count,
    messaging_settings,
    producer_app,
    publish_things,
    running,
    unsent_count,
)
from support.metrics import metric_value
from support.waiting import eventually

CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
async def rabbit_settings(broker_server_url: str) -> AsyncIterator[Settings]:
    settings = messaging_settings(
        broker_url=broker_server_url,
        messaging_exchange=f"test-{uuid.uuid4().hex[:10]}",
        messaging_max_attempts=3,
    )
    yield settings
    await delete_rabbit_topology(settings, ["products", "users"])


async def test_events_flow_through_rabbitmq_once_each(rabbit_settings: Settings) -> None:
    behaviour = Behaviour()
    producer = producer_app(rabbit_settings)
    consumer = consumer_app(rabbit_settings, behaviour)
    async with running(consumer, producer):
        await publish_things(producer.state.context.db, range(50))
        await drain(producer, consumer, within=20)
        db = consumer.state.context.db
        assert await effect_count(db) == 50
        assert await inbox_count(db) == 50
        assert await unsent_count(producer.state.context.db) == 0
        assert sorted(e.data.n for e in behaviour.seen) == list(range(50))


async def test_an_event_through_rabbitmq_stays_in_the_trace_of_its_request(
    rabbit_settings: Settings,
) -> None:
    exported = InMemorySpanExporter()
    tracing = Tracing(SimpleSpanProcessor(exported))
    producer = producer_app(rabbit_settings, tracing=tracing)
    consumer = consumer_app(rabbit_settings, Behaviour(), tracing=tracing)
    async with running(consumer, producer):
        transport = httpx.ASGITransport(producer)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            traceparent = f"00-{CLIENT_TRACE_ID}-00f067aa0ba902b7-01"
            answer = await client.post("/things?n=1", headers={"traceparent": traceparent})
        assert answer.status_code == 200
        await drain(producer, consumer, within=20)
    spans = {(s.name, s.kind): s for s in exported.get_finished_spans()}
    created = spans["create test.thing_happened", SpanKind.PRODUCER]
    sent = spans["send test.thing_happened", SpanKind.CLIENT]
    handled = spans["process test.thing_happened", SpanKind.CONSUMER]
    for span in (created, sent, handled):
        assert f"{span.context.trace_id:032x}" == CLIENT_TRACE_ID
        assert (span.attributes or {})["messaging.system"] == "rabbitmq"
    assert sent.parent is not None
    assert handled.parent is not None
    assert sent.parent.span_id == handled.parent.span_id == created.context.span_id
    assert handled.resource.attributes["service.name"] == "products"


async def test_the_whole_path_on_postgresql(rabbit_settings: Settings, postgres_url: str) -> None:
    settings = rabbit_settings.model_copy(update={"database_url": postgres_url})
    behaviour = Behaviour(follow_up=True)
    producer = producer_app(settings)
    consumer = consumer_app(settings, behaviour)
    async with running(consumer, producer):
        await publish_things(producer.state.context.db, range(20))
        await drain(producer, consumer, within=20)
        db = consumer.state.context.db
        assert await effect_count(db) == 20
        assert await inbox_count(db) == 20
        assert await unsent_count(db) == 0  # the follow-ups were sent too


async def test_two_groups_each_get_every_event(rabbit_settings: Settings) -> None:
    products, users = Behaviour(), Behaviour()
    producer = producer_app(rabbit_settings)
    first = consumer_app(rabbit_settings, products, service="products")
    second = consumer_app(rabbit_settings, users, service="users")
    async with running(first, second, producer):
        await publish_things(producer.state.context.db, range(10))
        await drain(producer, first, second, within=20)
        assert len(products.seen) == len(users.seen) == 10


async def test_retries_then_dead_letter_queue(rabbit_settings: Settings) -> None:
    behaviour = Behaviour(fail_times={1: 1}, always_fail={2})
    producer = producer_app(rabbit_settings)
    consumer = consumer_app(rabbit_settings, behaviour)
    async with running(consumer, producer):
        await publish_things(producer.state.context.db, [1, 2, 3])
        await drain(producer, consumer, within=20)
        db = consumer.state.context.db
        assert behaviour.calls == {1: 2, 2: 3, 3: 1}
        assert await effect_count(db) == 2
        assert await dead_letter_count(db) == 1
        runtime = consumer.state.messaging
        assert await runtime.broker.dead_letter_count("products") == 1


async def test_the_broker_probe_answers(rabbit_settings: Settings) -> None:
    import httpx

    producer = producer_app(rabbit_settings)
    async with (
        running(producer),
        httpx.AsyncClient(transport=httpx.ASGITransport(producer), base_url="http://t") as http,
    ):
        body = (await http.get("/readyz")).json()
        assert body["checks"]["broker"] == "ok"


async def test_the_service_starts_and_queues_events_while_rabbitmq_is_down() -> None:
    from support.servers import free_port

    settings = messaging_settings(broker_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    producer = producer_app(settings)
    async with running(producer):
        await publish_things(producer.state.context.db, range(3))
        relay = producer.state.messaging.relay
        with pytest.raises(BrokerUnavailable):
            await relay.run_once()
        assert await unsent_count(producer.state.context.db) == 3


@pytest.mark.parametrize("relays", [3])
async def test_relays_on_postgres_never_send_a_row_twice(
    rabbit_settings: Settings, postgres_url: str, relays: int
) -> None:
    """Several relays on one outbox (FOR UPDATE SKIP LOCKED): every row reaches the
    exchange exactly once."""
    database = Database(postgres_url, schema="orders")
    await upgrade(database, [MESSAGING_MIGRATIONS])
    await publish_things(database, range(300))
    assert rabbit_settings.broker_url is not None
    connection = await aio_pika.connect(rabbit_settings.broker_url)
    seen: list[str] = []
    brokers = []
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            rabbit_settings.messaging_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "#")

        async def record(message: Any) -> None:
            seen.append(message.message_id)
            await message.ack()

        await queue.consume(record)
        workers = []
        for _ in range(relays):
            broker = RabbitBroker(
                rabbit_settings.broker_url,
                BrokerOptions(exchange=rabbit_settings.messaging_exchange),
            )
            brokers.append(broker)
            workers.append(OutboxRelay(database, broker, service="orders", batch_size=20))

        async def drain_with(relay: OutboxRelay) -> None:
            while await relay.run_once():
                pass

        await asyncio.gather(*(drain_with(relay) for relay in workers))
        await eventually(lambda: len(seen) >= 300, within=4)
        await asyncio.sleep(0.2)  # a redelivered duplicate would land by now
        assert len(seen) == 300
        assert len(set(seen)) == 300
        assert await unsent_count(database) == 0
    finally:
        for broker in brokers:
            await broker.close()
        await connection.close()
        await database.dispose()


async def test_dead_letter_queue_name_is_per_group() -> None:
    assert dead_letter_queue_name("mercato.events", "orders") == "mercato.events.orders.dlq"


async def test_quorum_queues_carry_events_too(broker_server_url: str) -> None:
    settings = messaging_settings(
        broker_url=broker_server_url,
        messaging_exchange=f"test-{uuid.uuid4().hex[:10]}",
        messaging_queue_type="quorum",
    )
    behaviour = Behaviour()
    producer, consumer = producer_app(settings), consumer_app(settings, behaviour)
    try:
        async with running(consumer, producer):
            await publish_things(producer.state.context.db, range(5))
            await drain(producer, consumer, within=20)
            assert len(behaviour.seen) == 5
        connection = await aio_pika.connect(broker_server_url)
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(
                f"{settings.messaging_exchange}.products",
                durable=True,
                arguments={"x-queue-type": "quorum"},
            )  # redeclaring with the same arguments succeeds: it is a quorum queue
            assert queue.name.endswith(".products")
        finally:
            await connection.close()
    finally:
        await delete_rabbit_topology(settings, ["products"])


async def test_an_event_published_before_its_group_ever_connected_is_kept(
    rabbit_settings: Settings,
) -> None:
    """Like the bootstrap admin's `user.registered`, published before users subscribes:
    the publisher declared every known group's queue, so the event waits there."""
    groups = {"products": (ThingHappened.event_type,)}
    producer = producer_app(rabbit_settings, groups=groups)
    async with running(producer):
        await publish_things(producer.state.context.db, range(5))
        await drain(producer, within=20)
        assert await unsent_count(producer.state.context.db) == 0

    behaviour = Behaviour()
    consumer = consumer_app(rabbit_settings, behaviour)
    async with running(consumer):
        await drain(consumer, within=20)
        assert sorted(e.data.n for e in behaviour.seen) == list(range(5))


async def test_a_consumer_stopped_during_an_outage_gives_its_messages_back_to_rabbitmq(
    rabbit_settings: Settings,
) -> None:
    behaviour = Behaviour(dependency_down=True)
    producer = producer_app(rabbit_settings)
    first = consumer_app(rabbit_settings, behaviour)
    async with running(producer):
        async with running(first):
            await publish_things(producer.state.context.db, range(3))
            await eventually(lambda: all(behaviour.calls.get(n, 0) > 3 for n in range(3)))
            assert list(first.state.messaging.paused()) == ["products"]
        # Stopped while paused: the three messages went back to the queue, unacked.
        behaviour.dependency_down = False
        second = consumer_app(rabbit_settings, behaviour)
        async with running(second):
            await drain(producer, second, within=20)
            assert await effect_count(second.state.context.db) == 3
            assert await dead_letter_count(second.state.context.db) == 0


async def test_the_consumer_lag_is_sampled_from_rabbitmq(rabbit_settings: Settings) -> None:
    settings = rabbit_settings.model_copy(update={"messaging_lag_interval": 0.1})
    behaviour = Behaviour(block=asyncio.Event())
    consumer, producer = consumer_app(settings, behaviour), producer_app(settings)

    def lag() -> float:
        text = generate_latest(consumer.state.context.registry).decode()
        return metric_value(text, "messaging_consumer_lag", service="products", queue="products")

    async with running(consumer), running(producer):
        await publish_things(producer.state.context.db, range(5))
        await eventually(lambda: lag() == 5, within=20)  # held by the blocked handler
        assert behaviour.block is not None
        behaviour.block.set()
        await drain(consumer, within=20)
        await eventually(lambda: lag() == 0, within=20)
