"""Tiny service apps that publish and handle a test event, for the messaging tests.

A *producer* app publishes ``ThingHappened`` from ``POST /things`` (or ``publish_things``);
a *consumer* app handles it by inserting a row into ``test_effects`` (its side effect), and
can be told to fail. Both are real ``create_service_app`` apps with ``messaging_hook``.
On the memory backend, apps that should see each other's events are given one broker
(``broker=MemoryBroker()``), as ``mercato up`` gives its services; without one, each app
has a broker of its own (RabbitMQ, Kafka: its own connection).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select

from mercato.messaging import (
    MESSAGING_MIGRATIONS,
    Broker,
    ConsumerGroups,
    Envelope,
    EventData,
    Handlers,
    Outbox,
    SharedMessaging,
    messaging_hook,
)
from mercato.messaging.tables import dead_letters, inbox, outbox
from mercato.platform.app import ServiceContext, create_service_app
from mercato.platform.db import Database, UnitOfWork
from mercato.platform.telemetry import Tracing
from mercato.settings import ServiceName, Settings, load_settings


class ThingHappened(EventData):
    event_type = "test.thing_happened"

    n: int


class FollowUp(EventData):
    event_type = "test.follow_up"

    n: int


effects_metadata = MetaData()
effects = Table(
    "test_effects",
    effects_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(100), nullable=False),
    Column("n", Integer, nullable=False),
    Column("request_id", String(100), nullable=True),
)


@dataclass
class Behaviour:
    """How the consumer's handler misbehaves, per event number ``n``."""

    fail_times: dict[int, int] = field(default_factory=dict)  # raise this many times first
    always_fail: set[int] = field(default_factory=set)
    calls: dict[int, int] = field(default_factory=dict)
    block: asyncio.Event | None = None  # wait on it before handling
    dependency_down: bool = False  # raise ConnectionRefusedError while True
    delay: float = 0.0  # seconds each handling takes
    follow_up: bool = False  # publish FollowUp(n) from the handler
    seen: list[Envelope[Any]] = field(default_factory=list)


def messaging_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env_file": None,
        "environment": "testing",
        "messaging_retry_backoff": 0.01,
        "messaging_retry_backoff_max": 0.05,
        "outbox_poll_interval": 0.05,
        "graceful_timeout": 2.0,
    }
    values.update(overrides)
    return load_settings(**values)


def effects_hook() -> Callable[[FastAPI, ServiceContext], Any]:
    @asynccontextmanager
    async def hook(app: FastAPI, context: ServiceContext) -> AsyncIterator[None]:
        async with context.db.engine.begin() as connection:
            await connection.run_sync(effects_metadata.create_all)
        yield

    return hook


def consumer_handlers(behaviour: Behaviour, outbox: Outbox, group: str = "products") -> Handlers:
    handlers = Handlers(group)

    @handlers.on(ThingHappened)
    async def record_thing(event: Envelope[ThingHappened], uow: UnitOfWork) -> None:
        n = event.data.n
        behaviour.calls[n] = behaviour.calls.get(n, 0) + 1
        if behaviour.block is not None:
            await behaviour.block.wait()
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        if behaviour.dependency_down:
            raise ConnectionRefusedError(111, "Connection refused")
        if n in behaviour.always_fail:
            raise RuntimeError(f"thing {n} always fails")
        if behaviour.fail_times.get(n, 0) >= behaviour.calls[n]:
            raise RuntimeError(f"thing {n} fails this time")
        behaviour.seen.append(event)
        await uow.session.execute(
            insert(effects).values(event_id=event.id, n=n, request_id=event.request_id)
        )
        if behaviour.follow_up:
            await outbox.publish(uow, FollowUp(n=n), key=str(n))

    return handlers


def producer_router(outbox: Outbox) -> APIRouter:
    router = APIRouter()

    @router.post("/things")
    async def create_thing(request: Request, n: int, rollback: bool = False) -> dict[str, str]:
        database: Database = request.app.state.context.db
        async with database.unit_of_work() as uow:
            envelope = await outbox.publish(uow, ThingHappened(n=n), key=str(n))
            if not rollback:
                await uow.commit()
        return {"id": envelope.id}

    return router


def producer_app(
    settings: Settings,
    service: ServiceName = "orders",
    *,
    broker: Broker | None = None,
    groups: ConsumerGroups | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    outbox = Outbox(service)
    return create_service_app(
        settings,
        service,
        title="test producer",
        routers=[producer_router(outbox)],
        migrations=[MESSAGING_MIGRATIONS],
        hooks=[messaging_hook(outbox, shared=SharedMessaging(groups or {}, broker))],
        tracing=tracing,
    )


def consumer_app(
    settings: Settings,
    behaviour: Behaviour,
    service: ServiceName = "products",
    *,
    broker: Broker | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    outbox = Outbox(service)
    handlers = consumer_handlers(behaviour, outbox, service)
    return create_service_app(
        settings,
        service,
        title="test consumer",
        routers=[producer_router(outbox)],
        migrations=[MESSAGING_MIGRATIONS],
        hooks=[effects_hook(), messaging_hook(outbox, handlers, SharedMessaging(broker=broker))],
        tracing=tracing,
    )


async def publish_things(
    database: Database, numbers: range | list[int], outbox: Outbox | None = None
) -> None:
    """Publish ``ThingHappened(n)`` for each number, one transaction each (through the
    ``outbox`` of a running producer, whose relay a commit wakes, or one of "orders")."""
    outbox = outbox or Outbox("orders")
    for n in numbers:
        async with database.unit_of_work() as uow:
            await outbox.publish(uow, ThingHappened(n=n), key=str(n))
            await uow.commit()


async def count(database: Database, query: Any) -> int:
    async with database.unit_of_work(read_only=True) as uow:
        return int((await uow.session.execute(query)).scalar_one())


def effect_count(database: Database) -> Any:
    return count(database, select(func.count()).select_from(effects))


def distinct_effects(database: Database) -> Any:
    return count(database, select(func.count(func.distinct(effects.c.event_id))))


def inbox_count(database: Database) -> Any:
    return count(database, select(func.count()).select_from(inbox))


def dead_letter_count(database: Database) -> Any:
    return count(database, select(func.count()).select_from(dead_letters))


def unsent_count(database: Database) -> Any:
    return count(
        database, select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
    )


async def delete_rabbit_topology(settings: Settings, groups: list[str]) -> None:
    """Remove what a test declared on a shared RabbitMQ (its exchanges and group queues)."""
    import aio_pika

    from mercato.messaging.brokers.rabbitmq import (
        dead_letter_queue_name,
        queue_name,
        retry_queue_name,
    )
    from mercato.messaging.runtime import retry_delays
    from mercato.serving import consumer_groups

    groups = sorted({*groups, *consumer_groups()})  # every known group is declared on connect
    assert settings.broker_url is not None
    exchange = settings.messaging_exchange
    connection = await aio_pika.connect(settings.broker_url)
    try:
        channel = await connection.channel()
        for group in groups:
            await channel.queue_delete(queue_name(exchange, group))
            await channel.queue_delete(dead_letter_queue_name(exchange, group))
            for delay in set(retry_delays(settings)):
                await channel.queue_delete(retry_queue_name(exchange, group, delay))
        await channel.exchange_delete(exchange)
        await channel.exchange_delete(f"{exchange}.dlx")
    finally:
        await connection.close()


@asynccontextmanager
async def running(*apps: FastAPI) -> AsyncIterator[None]:
    """Run the lifespans of ``apps`` (in order) for the block, as their servers would."""
    async with AsyncExitStack() as stack:
        for app in apps:
            await stack.enter_async_context(app.router.lifespan_context(app))
        yield
