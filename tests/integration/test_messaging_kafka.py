"""The messaging path on Kafka (aiokafka against a Tansu broker started by the test)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from mercato.settings import Settings
from support.messaging import drain
from support.messaging_apps import (
    Behaviour,
    consumer_app,
    dead_letter_count,
    effect_count,
    inbox_count,
    messaging_settings,
    producer_app,
    publish_things,
    running,
    unsent_count,
)
from support.tansu import tansu_broker

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture(scope="module")
def kafka_url() -> Iterator[str]:
    with tansu_broker() as url:
        yield url


@pytest.fixture
def kafka_settings(kafka_url: str) -> Settings:
    return messaging_settings(
        broker_url=kafka_url,
        messaging_exchange=f"test-{uuid.uuid4().hex[:10]}",
        messaging_max_attempts=3,
    )


async def test_events_flow_through_kafka_once_each_in_key_order(kafka_settings: Settings) -> None:
    products, users = Behaviour(), Behaviour()
    producer = producer_app(kafka_settings)
    first = consumer_app(kafka_settings, products, service="products")
    second = consumer_app(kafka_settings, users, service="users")
    async with running(first, second, producer):
        await publish_things(producer.state.context.db, range(40))
        await drain(producer, first, second, within=60)
        for app, behaviour in ((first, products), (second, users)):
            db = app.state.context.db
            assert await effect_count(db) == 40
            assert await inbox_count(db) == 40
            assert sorted(e.data.n for e in behaviour.seen) == list(range(40))
        assert await unsent_count(producer.state.context.db) == 0


async def test_retries_then_the_dead_letter_topic(kafka_settings: Settings) -> None:
    behaviour = Behaviour(fail_times={1: 1}, always_fail={2})
    producer = producer_app(kafka_settings)
    consumer = consumer_app(kafka_settings, behaviour)
    async with running(consumer, producer):
        await publish_things(producer.state.context.db, [1, 2, 3])
        await drain(producer, consumer, within=60)
        db = consumer.state.context.db
        assert behaviour.calls == {1: 2, 2: 3, 3: 1}
        assert await effect_count(db) == 2
        assert await dead_letter_count(db) == 1
        assert await consumer.state.messaging.broker.dead_letter_count("products") == 1
