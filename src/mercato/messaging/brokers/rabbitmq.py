"""RabbitMQ through aio-pika (see docs/adr: "RabbitMQ client").

Topology, all durable:

- topic exchange ``mercato.events``; every event is published there with its type as the
  routing key, persistent, and awaited until the broker confirmed it (publisher confirms);
- per consumer group ``G``: queue ``mercato.events.G`` bound to the types it handles; retry
  queues ``mercato.events.G.retry.<ms>ms`` (a TTL, then dead-lettered back to the group's
  queue) and the dead-letter queue ``mercato.events.G.dlq``, bound to the direct exchange
  ``mercato.events.dlx``;
- manual acks, bounded prefetch; queue type ``classic`` or ``quorum`` (settings).

A failed delivery is re-published to the retry queue of its attempt with the attempt count
in the ``x-mercato-attempt`` header, then acked. ``connect_robust`` reconnects after a
broker restart and restores channels, queues, bindings and consumers; a message whose ack
was lost with the connection is redelivered, and the consumer's inbox skips it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from mercato.messaging.brokers.base import (
    BrokerOptions,
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

log = get_logger("mercato.messaging.rabbitmq")

ATTEMPT_HEADER = "x-mercato-attempt"
TARGET_HEADER = "x-mercato-target"
ERROR_HEADER = "x-mercato-error"
PUBLISH_TIMEOUT = 10.0
#: How long a shutdown waits for each step with the broker (cancel, channel, connection).
CLOSE_TIMEOUT = 3.0


def queue_name(exchange: str, group: str) -> str:
    return f"{exchange}.{group}"


def retry_queue_name(exchange: str, group: str, delay: float) -> str:
    return f"{exchange}.{group}.retry.{round(delay * 1000)}ms"


def dead_letter_queue_name(exchange: str, group: str) -> str:
    return f"{exchange}.{group}.dlq"


class RabbitBroker(RemoteBroker["_RabbitSubscription", AbstractChannel]):
    name = "rabbitmq"

    def __init__(
        self, url: str, options: BrokerOptions | None = None, *, connect_timeout: float = 5.0
    ) -> None:
        super().__init__()
        options = options or BrokerOptions()
        self.url, self.exchange_name, self.queue_type = url, options.exchange, options.queue_type
        self.known_groups = dict(options.known_groups)
        self.retry_delays = options.retry_delays or (1.0,)
        self.connect_timeout = connect_timeout
        self._connection: AbstractRobustConnection | None = None
        self._exchange: AbstractExchange | None = None

    @property
    def dlx_name(self) -> str:
        return f"{self.exchange_name}.dlx"

    async def _connect(self) -> AbstractChannel:
        """The publishing channel (the connection is made once, and reconnects itself)."""
        try:
            if self._connection is None:
                self._connection = await aio_pika.connect_robust(
                    self.url,
                    timeout=self.connect_timeout,
                    client_properties={"connection_name": "mercato"},
                )
            channel = await self._connection.channel(publisher_confirms=True)
            self._exchange = await channel.declare_exchange(
                self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
            )
            await channel.declare_exchange(
                self.dlx_name, aio_pika.ExchangeType.DIRECT, durable=True
            )
            await self._declare_known_groups(channel, self._exchange)
        except (OSError, aio_pika.exceptions.AMQPError, TimeoutError) as exc:
            raise BrokerUnavailable.because(exc) from exc
        return channel

    async def _declare_known_groups(
        self, channel: AbstractChannel, exchange: AbstractExchange
    ) -> None:
        for group, routing_keys in self.known_groups.items():
            queue = await channel.declare_queue(
                queue_name(self.exchange_name, group),
                durable=True,
                arguments=self._queue_arguments(),
            )
            for key in routing_keys:
                await queue.bind(exchange, key)

    async def _disconnect(self) -> None:
        if self._connection is not None:
            await bounded(
                self._connection.close(),
                within=CLOSE_TIMEOUT,
                what="closing the RabbitMQ connection",
            )
        self._connection = self._client = None
        self._exchange = None

    async def ping(self) -> None:
        connection = self._connection
        if connection is None or connection.is_closed or not connection.connected.is_set():
            raise BrokerUnavailable("not connected to RabbitMQ")

    def _queue_arguments(self, **extra: Any) -> dict[str, Any]:
        return {"x-queue-type": self.queue_type, **extra}

    async def publish(
        self, messages: Sequence[OutgoingMessage], settled: Settled | None = None
    ) -> None:
        await self._ready()
        exchange = self._exchange
        assert exchange is not None
        try:
            await asyncio.gather(
                *(
                    exchange.publish(
                        _amqp_message(message), message.event_type, timeout=PUBLISH_TIMEOUT
                    )
                    for message in messages
                )
            )
        except Exception as exc:
            raise BrokerUnavailable.because(exc) from exc

    async def publish_to_queue(self, queue: str, message: aio_pika.Message) -> None:
        """Send ``message`` straight to ``queue`` (default exchange), confirmed."""
        channel = await self._ready()
        await channel.default_exchange.publish(message, queue, timeout=PUBLISH_TIMEOUT)

    async def publish_dead_letter(self, group: str, message: aio_pika.Message) -> None:
        channel = await self._ready()
        exchange = await channel.get_exchange(self.dlx_name, ensure=False)
        await exchange.publish(message, group, timeout=PUBLISH_TIMEOUT)

    async def declare_group(self, channel: AbstractChannel, group: str) -> AbstractQueue:
        """The group's queue, its retry queues and its dead-letter queue (idempotent)."""
        await channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        dlx = await channel.declare_exchange(
            self.dlx_name, aio_pika.ExchangeType.DIRECT, durable=True
        )
        main = await channel.declare_queue(
            queue_name(self.exchange_name, group), durable=True, arguments=self._queue_arguments()
        )
        for delay in sorted(set(self.retry_delays)):
            await channel.declare_queue(
                retry_queue_name(self.exchange_name, group, delay),
                durable=True,
                arguments=self._queue_arguments(
                    **{
                        "x-message-ttl": max(round(delay * 1000), 1),
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": queue_name(self.exchange_name, group),
                    }
                ),
            )
        dlq = await channel.declare_queue(
            dead_letter_queue_name(self.exchange_name, group),
            durable=True,
            arguments=self._queue_arguments(),
        )
        await dlq.bind(dlx, group)
        return main

    def _new_subscription(self, group: ConsumerGroup) -> Subscription:
        subscription = _RabbitSubscription(self, group)
        self._subscriptions.append(subscription)
        return subscription

    async def message_count(self, queue: str) -> int:
        """Ready messages in ``queue`` (0 when it does not exist)."""
        if self._connection is None:
            raise BrokerUnavailable("not connected to RabbitMQ")
        channel = await self._connection.channel(publisher_confirms=False)
        try:
            declared = await channel.declare_queue(queue, passive=True)
            result = declared.declaration_result
            return int(result.message_count or 0)
        except aio_pika.exceptions.ChannelClosed:
            return 0
        finally:
            if not channel.is_closed:
                await channel.close()

    async def dead_letter_count(self, group: str) -> int:
        return await self.message_count(dead_letter_queue_name(self.exchange_name, group))

    def retry_delay_for(self, wanted: float) -> float:
        """The shortest declared retry delay at least ``wanted`` (else the longest)."""
        for delay in sorted(set(self.retry_delays)):
            if delay >= wanted - 1e-9:
                return delay
        return max(self.retry_delays)


def _amqp_message(message: OutgoingMessage) -> aio_pika.Message:
    headers: dict[str, Any] = dict(message.headers)
    if message.target is not None:
        headers[TARGET_HEADER] = message.target
    if message.key is not None:
        headers["x-mercato-key"] = message.key
    return aio_pika.Message(
        message.body,
        message_id=message.event_id,
        type=message.event_type,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=headers,
    )


class _RabbitSubscription(Subscription):
    def __init__(self, broker: RabbitBroker, group: ConsumerGroup) -> None:
        self.broker, self.group = broker, group
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._retrying: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        try:
            await self._consume()
        except (BrokerUnavailable, OSError, aio_pika.exceptions.AMQPError) as exc:
            log.warning("cannot subscribe yet; retrying", group=self.group.name, error=str(exc))
            self._retrying = asyncio.create_task(self._keep_trying())

    async def _keep_trying(self) -> None:
        delay = 0.5
        while not await pause(delay, self._stopped):
            try:
                await self._consume()
                log.info("subscribed", group=self.group.name)
                return
            except (BrokerUnavailable, OSError, aio_pika.exceptions.AMQPError) as exc:
                delay = min(delay * 2, 10.0)
                log.warning("cannot subscribe yet; retrying", group=self.group.name, error=str(exc))

    async def _consume(self) -> None:
        await self.broker._ready()
        connection = self.broker._connection
        assert connection is not None
        channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=self.group.prefetch)
        queue = await self.broker.declare_group(channel, self.group.name)
        exchange = await channel.get_exchange(self.broker.exchange_name, ensure=False)
        for key in self.group.routing_keys:
            await queue.bind(exchange, key)
        self._channel, self._queue = channel, queue
        self._tag = await queue.consume(self._on_message)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._in_flight += 1
        self._idle.clear()
        try:
            await self.group.callback(_RabbitDelivery(self.broker, self.group.name, message))
        except Exception:  # the runner settles every message; leave this one unacked
            log.exception("consumer callback failed", group=self.group.name)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def stop(self, grace: float) -> None:
        """Stop taking messages, wait up to ``grace`` seconds for those being handled, close
        the channel; every step bounded (unacked messages are redelivered)."""
        self._stopped.set()
        if self._retrying is not None:
            await wait_ended(
                [self._retrying], within=CLOSE_TIMEOUT, what=f"subscribing group {self.group.name}"
            )
            self._retrying = None
        if self._queue is not None and self._tag is not None:
            await bounded(
                self._queue.cancel(self._tag),
                within=CLOSE_TIMEOUT,
                what=f"cancelling the consumer of group {self.group.name}",
            )
        if not await pause(grace, self._idle) and grace > 0:
            log.warning(
                "consumer stopped with handlers in flight",
                group=self.group.name,
                count=self._in_flight,
            )
        if self._channel is not None and not self._channel.is_closed:
            await bounded(
                self._channel.close(),
                within=CLOSE_TIMEOUT,
                what=f"closing the channel of group {self.group.name}",
            )
        self._channel = self._queue = None
        self._tag = None
        self.broker._forget(self)

    async def pending(self) -> int:
        total = self._in_flight + await self.broker.message_count(
            queue_name(self.broker.exchange_name, self.group.name)
        )
        for delay in set(self.broker.retry_delays):
            total += await self.broker.message_count(
                retry_queue_name(self.broker.exchange_name, self.group.name, delay)
            )
        return total


class _RabbitDelivery(Delivery):
    def __init__(self, broker: RabbitBroker, group: str, message: AbstractIncomingMessage) -> None:
        self.broker, self.group, self.message = broker, group, message
        self.body = message.body
        headers = message.headers or {}
        attempt = headers.get(ATTEMPT_HEADER, 1)
        self.attempt = int(attempt) if isinstance(attempt, int | str) else 1
        target = headers.get(TARGET_HEADER)
        self.target = str(target) if target is not None else None
        self.redelivered = bool(message.redelivered)

    def _copy(self, **headers: Any) -> aio_pika.Message:
        merged: dict[str, Any] = dict(self.message.headers or {})
        merged.update(headers)
        return aio_pika.Message(
            self.message.body,
            message_id=self.message.message_id,
            type=self.message.type,
            content_type=self.message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=merged,
        )

    async def ack(self) -> None:
        await self.message.ack()

    async def retry(self, delay: float) -> None:
        queue = retry_queue_name(
            self.broker.exchange_name, self.group, self.broker.retry_delay_for(delay)
        )
        await self.broker.publish_to_queue(queue, self._copy(**{ATTEMPT_HEADER: self.attempt + 1}))
        await self.message.ack()

    async def dead_letter(self, reason: str) -> None:
        copy = self._copy(**{ATTEMPT_HEADER: self.attempt, ERROR_HEADER: reason[:500]})
        await self.broker.publish_dead_letter(self.group, copy)
        await self.message.ack()

    async def release(self) -> None:
        await self.message.nack(requeue=True)
