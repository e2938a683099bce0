"""Operating the event system: `mercato events dlq list|replay`, the headless worker, and
the messaging metrics, on embedded backends (file SQLite, memory broker)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from mercato.cli import app as cli
from mercato.messaging.brokers.memory import MemoryBroker
from mercato.messaging.worker import run_headless
from mercato.platform.app import ServiceContext, create_service_app
from support.messaging import drain, runtime_of
from support.messaging_apps import (
    Behaviour,
    consumer_app,
    dead_letter_count,
    effect_count,
    messaging_settings,
    producer_app,
    publish_things,
    running,
)
from support.waiting import eventually

pytestmark = pytest.mark.anyio


async def test_dead_letters_are_listed_and_replayed_to_their_group_only(tmp_path: Path) -> None:
    broker = MemoryBroker()
    products_url = f"sqlite+aiosqlite:///{tmp_path}/products.db"
    settings = messaging_settings(products_database_url=products_url, messaging_max_attempts=2)
    products, users = Behaviour(always_fail={4}), Behaviour()
    producer = producer_app(settings, broker=broker)
    first = consumer_app(settings, products, service="products", broker=broker)
    second = consumer_app(settings, users, service="users", broker=broker)
    env = {"ENVIRONMENT": "testing", "PRODUCTS_DATABASE_URL": products_url}
    runner = CliRunner()
    async with running(first, second, producer):
        await publish_things(producer.state.context.db, [3, 4, 5])
        await drain(producer, first, second)
        assert await dead_letter_count(first.state.context.db) == 1

        listed = await asyncio.to_thread(
            runner.invoke, cli, ["events", "dlq", "list", "--service", "products"], env=env
        )
        assert listed.exit_code == 0, listed.output
        assert "test.thing_happened" in listed.output
        assert "thing 4 always fails" in listed.output
        assert "1 dead letter(s)" in listed.output

        refused = await asyncio.to_thread(
            runner.invoke, cli, ["events", "dlq", "replay", "--service", "products"], env=env
        )
        assert refused.exit_code == 2

        products.always_fail.clear()  # the bug is fixed; replay
        replayed = await asyncio.to_thread(
            runner.invoke,
            cli,
            ["events", "dlq", "replay", "--service", "products", "--all"],
            env=env,
        )
        assert replayed.exit_code == 0, replayed.output
        assert "replayed 1" in replayed.output
        await drain(producer, first, second)
        assert sorted(e.data.n for e in products.seen) == [3, 4, 5]
        assert users.calls == {3: 1, 4: 1, 5: 1}  # the replay was for products only
        assert await effect_count(first.state.context.db) == 3

        again = await asyncio.to_thread(
            runner.invoke,
            cli,
            ["events", "dlq", "list", "--service", "products", "--json"],
            env=env,
        )
        assert again.output.strip() == ""


async def test_the_headless_worker_consumes_until_stopped() -> None:
    broker = MemoryBroker()
    behaviour = Behaviour()
    producer = producer_app(messaging_settings(), broker=broker)
    consumer = consumer_app(messaging_settings(), behaviour, broker=broker)
    stop = asyncio.Event()
    async with running(producer):
        worker = asyncio.create_task(run_headless([consumer], stop))
        await eventually(lambda: getattr(consumer.state, "messaging", None))
        await publish_things(producer.state.context.db, range(5))
        await drain(producer, consumer)
        assert len(behaviour.seen) == 5
        stop.set()
        await asyncio.wait_for(worker, 10)


async def test_the_headless_worker_stops_even_when_a_service_does_not() -> None:
    @asynccontextmanager
    async def never_closes(app: FastAPI, context: ServiceContext) -> AsyncIterator[None]:
        yield
        await asyncio.Event().wait()  # as a connection whose close is never answered

    settings = messaging_settings(graceful_timeout=0.2)
    stuck = create_service_app(settings, "products", title="stuck", hooks=[never_closes])
    stop = asyncio.Event()
    stop.set()  # stop as soon as it is up
    worker = asyncio.create_task(run_headless([stuck], stop))
    done, _ = await asyncio.wait({worker}, timeout=30)
    assert worker in done, "run_headless never returned"
    worker.result()


async def test_messaging_metrics_are_exported() -> None:
    broker = MemoryBroker()
    behaviour = Behaviour(fail_times={2: 1})
    producer = producer_app(messaging_settings(), broker=broker)
    consumer = consumer_app(messaging_settings(), behaviour, broker=broker)
    async with (
        running(consumer, producer),
        httpx.AsyncClient(transport=httpx.ASGITransport(consumer), base_url="http://t") as http,
        httpx.AsyncClient(transport=httpx.ASGITransport(producer), base_url="http://t") as out,
    ):
        await publish_things(producer.state.context.db, [1, 2])
        await drain(producer, consumer)
        await producer.state.messaging.relay.update_gauges()
        text = (await http.get("/metrics")).text
        produced = (await out.get("/metrics")).text
    assert 'messaging_events_consumed_total{consumer="products",outcome="handled",' in text
    assert 'messaging_events_retried_total{consumer="products",service="products",' in text
    assert "messaging_handler_duration_seconds_bucket" in text
    assert 'messaging_events_published_total{service="orders",type="test.thing_happened"} 2.0' in (
        produced
    )
    assert 'messaging_outbox_backlog{service="orders"} 0.0' in produced


async def test_readyz_says_while_a_consumer_waits_for_a_dependency() -> None:
    broker = MemoryBroker()
    settings = messaging_settings(messaging_max_attempts=2)
    behaviour = Behaviour(dependency_down=True)
    producer, consumer = (
        producer_app(settings, broker=broker),
        consumer_app(settings, behaviour, broker=broker),
    )
    transport = httpx.ASGITransport(consumer)
    async with (
        running(consumer, producer),
        httpx.AsyncClient(transport=transport, base_url="http://test") as http,
    ):
        await publish_things(producer.state.context.db, [1])
        await eventually(lambda: behaviour.calls.get(1, 0) > 3)  # more than max attempts
        assert list(runtime_of(consumer).paused()) == ["products"]
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["consumers"] == "unavailable (ConsumersPaused)"

        behaviour.dependency_down = False
        await drain(producer, consumer)
        assert (await http.get("/readyz")).status_code == 200
        assert await effect_count(consumer.state.context.db) == 1
        assert await dead_letter_count(consumer.state.context.db) == 0
