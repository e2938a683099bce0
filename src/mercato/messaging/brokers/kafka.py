"""Kafka through aiokafka.

- one topic for the events (``mercato.events``), keyed by the aggregate id given to
  ``publish(..., key=)``, so one aggregate's events keep their order within a partition;
- the producer waits for ``acks=all``;
- one consumer group per service (``mercato.events.<group>``); offsets are committed only
  after the handler's transaction committed; within a partition records are handled one
  after the other, partitions in parallel;
- a failing handler is retried in place with backoff (the partition waits), then the record
  goes to the dead-letter topic ``mercato.events.dlq`` (header ``x-mercato-consumer``).

Event types the group does not handle are skipped (their offsets committed), since every
group reads the one topic.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata

from mercato.messaging.brokers.base import (
    BrokerUnavailable,
    ConsumerGroup,
    Delivery,
    OutgoingMessage,
    RemoteBroker,
    Settled,
    Subscription,
)
from mercato.platform.logging import get_logger
from mercato.platform.shutdown import bounded, pause, wait_ended

log = get_logger("mercato.messaging.kafka")

#: How long a shutdown waits for the producer or a consumer to stop.
CLOSE_TIMEOUT = 5.0

TYPE_HEADER = "x-mercato-type"
TARGET_HEADER = "x-mercato-target"
CONSUMER_HEADER = "x-mercato-consumer"
ERROR_HEADER = "x-mercato-error"


def bootstrap_servers(url: str) -> str:
    """``kafka://host:port[,host:port]`` -> ``host:port[,host:port]``."""
    return url.split("://", 1)[1].strip("/")


class KafkaBroker(RemoteBroker["_KafkaSubscription", AIOKafkaProducer]):
    name = "kafka"

    def __init__(self, url: str, *, topic: str = "mercato.events", partitions: int = 6) -> None:
        super().__init__()
        self.servers = bootstrap_servers(url)
        self.topic, self.partitions = topic, partitions

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.topic}.dlq"

    async def _connect(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.servers, acks="all", linger_ms=1, request_timeout_ms=10_000
        )
        try:
            await self._create_topics()
            await producer.start()
        except (KafkaError, OSError) as exc:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise BrokerUnavailable.because(exc) from exc
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        return producer

    async def _create_topics(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.servers, request_timeout_ms=10_000)
        try:
            await admin.start()
            for name, partitions in ((self.topic, self.partitions), (self.dead_letter_topic, 1)):
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(
                        [NewTopic(name, num_partitions=partitions, replication_factor=1)]
                    )
        finally:
            await admin.close()

    async def _disconnect(self) -> None:
        if self._client is not None:
            await bounded(
                self._client.stop(), within=CLOSE_TIMEOUT, what="stopping the Kafka producer"
            )
            self._client = None

    async def ping(self) -> None:
        producer = await self._ready()
        try:
            async with asyncio.timeout(2.0):
                await producer.partitions_for(self.topic)
        except (KafkaError, TimeoutError) as exc:
            raise BrokerUnavailable.because(exc) from exc

    async def publish(
        self, messages: Sequence[OutgoingMessage], settled: Settled | None = None
    ) -> None:
        producer = await self._ready()
        try:
            futures = [
                await producer.send(
                    self.topic,
                    value=message.body,
                    key=(message.key or message.event_id).encode(),
                    headers=_headers(message),
                )
                for message in messages
            ]
            await asyncio.gather(*futures)
        except (KafkaError, OSError) as exc:
            raise BrokerUnavailable.because(exc) from exc

    async def send_dead_letter(
        self, record: ConsumerRecord[Any, Any], group: str, reason: str
    ) -> None:
        producer = await self._ready()
        headers = [
            (k, v) for k, v in (record.headers or ()) if k not in {CONSUMER_HEADER, ERROR_HEADER}
        ]
        headers += [(CONSUMER_HEADER, group.encode()), (ERROR_HEADER, reason[:500].encode())]
        await producer.send_and_wait(
            self.dead_letter_topic, value=record.value, key=record.key, headers=headers
        )

    def _new_subscription(self, group: ConsumerGroup) -> Subscription:
        subscription = _KafkaSubscription(self, group)
        self._subscriptions.append(subscription)
        return subscription

    async def dead_letter_count(self, group: str) -> int:
        """Dead letters this process sent for ``group`` (the topic is shared by all groups;
        the consumer's ``messaging_dead_letters`` table is the full record)."""
        return sum(s.dead_letters for s in self._subscriptions if s.group.name == group)


def _headers(message: OutgoingMessage) -> list[tuple[str, bytes]]:
    headers = [(TYPE_HEADER, message.event_type.encode())]
    if message.target is not None:
        headers.append((TARGET_HEADER, message.target.encode()))
    headers += [(k, v.encode()) for k, v in message.headers.items()]
    return headers


def _header(record: ConsumerRecord[Any, Any], name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return bytes(value).decode()
    return None


class _KafkaSubscription(Subscription):
    def __init__(self, broker: KafkaBroker, group: ConsumerGroup) -> None:
        self.broker, self.group = broker, group
        self.consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._in_flight = 0
        self.dead_letters = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"kafka-consumer-{self.group.name}")

    async def _connect(self) -> AIOKafkaConsumer:
        await self.broker._ready()
        consumer = AIOKafkaConsumer(
            self.broker.topic,
            bootstrap_servers=self.broker.servers,
            group_id=f"{self.broker.topic}.{self.group.name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.group.prefetch,
        )
        try:
            await consumer.start()
        except BaseException:  # a half-started consumer still holds connections
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise
        return consumer

    async def _run(self) -> None:
        delay = 0.5
        while not self._stopping.is_set():
            try:
                if self.consumer is None:
                    self.consumer = await self._connect()
                    delay = 0.5
                batches = await self.consumer.getmany(
                    timeout_ms=200, max_records=self.group.prefetch
                )
                if batches:
                    outcomes = await asyncio.gather(
                        *(self._partition(tp, records) for tp, records in batches.items()),
                        return_exceptions=True,
                    )  # every partition finishes its batch before any reconnect
                    for outcome in outcomes:
                        if isinstance(outcome, BaseException):
                            raise outcome
            except Exception as exc:  # uncommitted records are read again after reconnecting
                log.warning(
                    "Kafka consumer error; reconnecting",
                    group=self.group.name,
                    error=f"{type(exc).__name__}: {exc}",
                )
                await self._close_consumer()
                await pause(delay, self._stopping)
                delay = min(delay * 2, 10.0)

    async def _partition(self, tp: TopicPartition, records: list[ConsumerRecord[Any, Any]]) -> None:
        """Handle one partition's records in order, committing after each."""
        consumer = self.consumer
        assert consumer is not None
        for record in records:
            if self._stopping.is_set():
                return
            event_type = _header(record, TYPE_HEADER)
            ours = event_type in self.group.routing_keys or event_type is None
            if ours and not await self._deliver(record):
                consumer.seek(tp, record.offset)  # not settled: read it again
                return
            await consumer.commit({tp: OffsetAndMetadata(record.offset + 1, "")})

    async def _deliver(self, record: ConsumerRecord[Any, Any]) -> bool:
        """Handle ``record``, retrying in place; False when it was not settled (stopped, or
        given back)."""
        self._in_flight += 1
        try:
            delivery = _KafkaDelivery(self, record)
            while True:
                await self.group.callback(delivery)
                if delivery.outcome == "release":
                    return False
                if delivery.outcome != "retry":
                    return True
                if await pause(delivery.delay, self._stopping):
                    return False
                delivery = _KafkaDelivery(self, record, attempt=delivery.attempt + 1)
        finally:
            self._in_flight -= 1

    async def _close_consumer(self) -> None:
        if self.consumer is not None:
            await bounded(
                self.consumer.stop(),
                within=CLOSE_TIMEOUT,
                what=f"stopping the Kafka consumer of group {self.group.name}",
            )
            self.consumer = None

    async def stop(self, grace: float) -> None:
        """Stop polling, let the records in hand finish within ``grace`` seconds (at least
        half a second: a poll in progress ends within 200 ms), then close; bounded."""
        self._stopping.set()
        if self._task is not None:
            await wait_ended(
                [self._task],
                within=max(grace, 0.5),
                what=f"the Kafka consumer of {self.group.name}",
            )
            self._task = None
        await self._close_consumer()
        self.broker._forget(self)

    async def pending(self) -> int:
        """Records of the topic this group has not committed yet (its lag), plus in flight."""
        consumer = self.consumer
        if consumer is None:
            raise BrokerUnavailable("the Kafka consumer is not connected")
        assigned = list(consumer.assignment())
        if not assigned:
            raise BrokerUnavailable("no partitions assigned yet")
        ends = await consumer.end_offsets(assigned)
        lag = 0
        for tp in assigned:
            committed = await consumer.committed(tp) or 0
            lag += max(ends[tp] - committed, 0)
        return lag + self._in_flight


class _KafkaDelivery(Delivery):
    def __init__(
        self, subscription: _KafkaSubscription, record: ConsumerRecord[Any, Any], attempt: int = 1
    ) -> None:
        self.subscription, self.record = subscription, record
        self.body = bytes(record.value or b"")
        self.attempt = attempt
        self.target = _header(record, TARGET_HEADER)
        self.outcome = "pending"
        self.delay = 0.0

    async def ack(self) -> None:
        self.outcome = "ack"

    async def retry(self, delay: float) -> None:
        self.outcome, self.delay = "retry", delay

    async def dead_letter(self, reason: str) -> None:
        subscription = self.subscription
        await subscription.broker.send_dead_letter(self.record, subscription.group.name, reason)
        subscription.dead_letters += 1
        self.outcome = "dead"

    async def release(self) -> None:
        self.outcome = "release"  # not committed: read again
