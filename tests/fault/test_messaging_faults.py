"""The five fault tests of issue 3, on a private RabbitMQ node and on the memory broker,
and those that apply to Kafka on a Tansu broker (2-5: Tansu keeps its data in memory here,
so killing it, test 1, would lose the log itself).

1. the broker is killed for 5+ s while 500 events are produced: all 500 take effect once;
2. a consumer crashes after its transaction committed, before the ack: the redelivery is
   skipped by the inbox;
3. the producer process is SIGKILLed between commit and publish: the next start sends what
   was committed;
4. a poison message goes to the dead-letter queue after the configured attempts and the
   others keep flowing;
5. a rolled-back transaction publishes nothing.

Each test prints its counts (run with ``-s`` to see them).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from sqlalchemy import insert

from mercato.messaging import in_process_broker
from mercato.messaging.brokers.kafka import _KafkaDelivery
from mercato.messaging.brokers.memory import _MemoryDelivery
from mercato.messaging.brokers.rabbitmq import _RabbitDelivery
from mercato.messaging.tables import outbox
from mercato.settings import Settings
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
from support.rabbit_node import RabbitNode
from support.tansu import tansu_broker
from support.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.fault]

CRASH_SCRIPT = Path(__file__).resolve().parents[1] / "support" / "messaging_crash.py"


@pytest.fixture(scope="module")
def kafka_url() -> Iterator[str]:
    with tansu_broker() as url:
        yield url


@pytest.fixture(params=["memory", "rabbitmq", "kafka"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings_for(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Settings on ``backend`` with file SQLite databases (they survive a restart)."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "orders_database_url": f"sqlite+aiosqlite:///{tmp_path}/orders.db",
            "products_database_url": f"sqlite+aiosqlite:///{tmp_path}/products.db",
            "messaging_exchange": f"fault-{uuid.uuid4().hex[:8]}",
        }
        if backend == "rabbitmq":
            node: RabbitNode = request.getfixturevalue("rabbit_node")
            values["broker_url"] = node.url
        if backend == "kafka":
            values["broker_url"] = request.getfixturevalue("kafka_url")
        values.update(overrides)
        return messaging_settings(**values)

    return make


@asynccontextmanager
async def tap(settings: Settings) -> AsyncIterator[list[str]]:
    """Every message the exchange routes, as seen by a queue bound to ``#`` (RabbitMQ)."""
    seen: list[str] = []
    if not (settings.broker_url or "").startswith("amqp"):
        yield seen
        return
    connection = await aio_pika.connect(settings.broker_url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            settings.messaging_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "#")

        async def record(message: Any) -> None:
            seen.append(str(message.message_id))
            await message.ack()

        await queue.consume(record)
        yield seen
    finally:
        await connection.close()


def report(name: str, **counts: Any) -> None:
    print(f"\n[fault {name}] " + " ".join(f"{k}={v}" for k, v in counts.items()))


# --- 1 -----------------------------------------------------------------------------------


async def test_1_broker_killed_while_500_events_are_produced(
    rabbit_node: RabbitNode, tmp_path: Path
) -> None:
    settings = messaging_settings(
        broker_url=rabbit_node.url,
        messaging_exchange=f"fault-{uuid.uuid4().hex[:8]}",
        orders_database_url=f"sqlite+aiosqlite:///{tmp_path}/orders.db",
        products_database_url=f"sqlite+aiosqlite:///{tmp_path}/products.db",
    )
    broker = in_process_broker(settings)  # memory: the apps share it
    behaviour = Behaviour()
    producer, consumer = (
        producer_app(settings, broker=broker),
        consumer_app(settings, behaviour, broker=broker),
    )
    async with running(consumer, producer):
        db = producer.state.context.db

        async def produce() -> None:
            for n in range(500):
                await publish_things(db, [n])
                await asyncio.sleep(0.01)

        production = asyncio.create_task(produce())
        await eventually(lambda: len(behaviour.seen) >= 30, within=30)
        await asyncio.to_thread(rabbit_node.kill)
        down_at = asyncio.get_running_loop().time()
        await asyncio.sleep(5.5)
        backlog_while_down = await unsent_count(db)
        await asyncio.to_thread(rabbit_node.start)
        down_for = asyncio.get_running_loop().time() - down_at
        await production
        await drain(producer, consumer, within=120)
        consumer_db = consumer.state.context.db
        effects, distinct = await effect_count(consumer_db), await distinct_effects(consumer_db)
        inbox = await inbox_count(consumer_db)
        report(
            "1",
            produced=500,
            broker_down_s=round(down_for, 1),
            backlog_while_down=backlog_while_down,
            handler_effects=effects,
            distinct_ids=distinct,
            inbox=inbox,
            unsent=await unsent_count(db),
        )
        assert backlog_while_down > 0  # the outbox held what the broker could not take
        assert (effects, distinct, inbox) == (500, 500, 500)


# --- 2 -----------------------------------------------------------------------------------


async def test_2_crash_after_commit_before_ack_is_skipped_by_the_inbox(
    backend: str, settings_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for()
    broker = in_process_broker(settings)  # memory: the apps share it
    behaviour = Behaviour()
    delivery_class = {
        "memory": _MemoryDelivery,
        "rabbitmq": _RabbitDelivery,
        "kafka": _KafkaDelivery,
    }[backend]
    original_ack = delivery_class.ack
    sabotaged: list[str] = []

    async def crash_before_ack(self: Any) -> None:
        if b'"n":3' in self.body and not sabotaged:
            sabotaged.append("n=3")
            raise ConnectionError("the process died before the ack")
        await original_ack(self)

    monkeypatch.setattr(delivery_class, "ack", crash_before_ack)
    producer = producer_app(settings, broker=broker)
    first = consumer_app(settings, behaviour, broker=broker)
    async with running(producer):
        async with running(first):
            await publish_things(producer.state.context.db, range(10))
            await eventually(lambda: len(behaviour.seen) >= 10, within=30)
        # The consumer "restarts": its unacked message is delivered again.
        second = consumer_app(settings, behaviour, broker=broker)
        async with running(second):
            await drain(producer, second, within=60)
            db = second.state.context.db
            effects, inbox = await effect_count(db), await inbox_count(db)
    report(
        "2",
        backend=backend,
        sabotaged=len(sabotaged),
        handler_calls=sum(behaviour.calls.values()),
        effects=effects,
        inbox=inbox,
    )
    assert sabotaged == ["n=3"]
    assert behaviour.calls[3] == 1  # the redelivery never reached the handler
    assert (effects, inbox) == (10, 10)


# --- 3 -----------------------------------------------------------------------------------


async def test_3_producer_killed_between_commit_and_publish(
    backend: str, settings_for: Any
) -> None:
    # Memory: the services start together, as under `mercato up` (startup grace on).
    settings = settings_for(messaging_startup_grace=2.0 if backend == "memory" else 0.0)
    broker = in_process_broker(settings)  # memory: the apps share it
    overrides = {
        "orders_database_url": settings.orders_database_url,
        "products_database_url": settings.products_database_url,
        "messaging_exchange": settings.messaging_exchange,
        "broker_url": settings.broker_url,
        "messaging_startup_grace": settings.messaging_startup_grace,
    }
    behaviour = Behaviour()
    consumer = consumer_app(settings, behaviour, broker=broker)
    # RabbitMQ: the consumer's queue exists (and stays) while the producer dies. Memory: the
    # consumer runs inside the dying process, as under `mercato up`.
    async with AsyncExitStack() as stack:
        if backend != "memory":
            await stack.enter_async_context(running(consumer))
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(CRASH_SCRIPT), json.dumps(overrides), "200"]
            + (["--with-consumer"] if backend == "memory" else []),
            capture_output=True,
            timeout=120,
        )
        assert result.returncode == -9, result.stderr.decode()[-2000:]
        assert b"committed 200" in result.stdout
        producer = producer_app(settings, broker=broker)
        await stack.enter_async_context(running(producer))  # before the consumer, on purpose
        left_behind = await unsent_count(producer.state.context.db)
        if backend == "memory":
            await stack.enter_async_context(running(consumer))
        await drain(producer, consumer, within=60)
        db = consumer.state.context.db
        effects, inbox = await effect_count(db), await inbox_count(db)
        report(
            "3",
            backend=backend,
            committed=200,
            unsent_after_kill=left_behind,
            effects=effects,
            inbox=inbox,
        )
        assert left_behind > 0  # the kill did leave committed events unsent
        assert (effects, inbox) == (200, 200)


# --- 4 -----------------------------------------------------------------------------------


async def test_4_poison_messages_go_to_the_dead_letter_queue(
    backend: str, settings_for: Any
) -> None:
    settings = settings_for(messaging_max_attempts=3)
    broker = in_process_broker(settings)  # memory: the apps share it
    behaviour = Behaviour(always_fail={7})
    producer, consumer = (
        producer_app(settings, broker=broker),
        consumer_app(settings, behaviour, broker=broker),
    )
    async with running(consumer, producer):
        db = producer.state.context.db
        async with db.unit_of_work() as uow:  # an invalid payload, then valid events
            await uow.session.execute(
                insert(outbox).values(
                    event_id="poison",
                    event_type="test.thing_happened",
                    payload='{"id": "poison", "type": "test.thing_happened", "data": 42}',
                    created_at=datetime.now(UTC),
                )
            )
            await uow.commit()
        await publish_things(db, range(1, 21))
        await drain(producer, consumer, within=60)
        consumer_db = consumer.state.context.db
        effects, dead = await effect_count(consumer_db), await dead_letter_count(consumer_db)
        broker_dlq = await consumer.state.messaging.broker.dead_letter_count("products")
    report(
        "4",
        backend=backend,
        attempts_of_poison=behaviour.calls[7],
        dead_letters=dead,
        broker_dlq=broker_dlq,
        effects=effects,
    )
    assert behaviour.calls[7] == 3
    assert dead == 2
    assert broker_dlq == 2
    assert effects == 19


# --- 5 -----------------------------------------------------------------------------------


async def test_5_a_rolled_back_transaction_publishes_nothing(
    backend: str, settings_for: Any
) -> None:
    settings = settings_for()
    broker = in_process_broker(settings)  # memory: the apps share it
    behaviour = Behaviour()
    producer, consumer = (
        producer_app(settings, broker=broker),
        consumer_app(settings, behaviour, broker=broker),
    )
    async with (
        tap(settings) as routed,
        running(consumer, producer),
        httpx.AsyncClient(transport=httpx.ASGITransport(producer), base_url="http://t") as http,
    ):
        for n in range(20):
            await http.post(f"/things?n={n}&rollback={'true' if n % 2 else 'false'}")
        await drain(producer, consumer, within=30)
        effects = await effect_count(consumer.state.context.db)
        committed = sorted(e.data.n for e in behaviour.seen)
    report("5", backend=backend, committed=10, rolled_back=10, effects=effects, routed=len(routed))
    assert committed == list(range(0, 20, 2))
    if backend == "rabbitmq":
        assert len(routed) == 10
