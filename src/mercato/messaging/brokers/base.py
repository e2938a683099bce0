"""What every broker backend offers the outbox relay and the consumer runner."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from mercato.platform.logging import get_logger

log = get_logger("mercato.messaging.broker")


class BrokerUnavailable(Exception):
    """The broker did not take (or confirm) a message; the relay will try again."""

    @classmethod
    def because(cls, error: BaseException) -> BrokerUnavailable:
        """The outage that ``error`` (a client library's) stands for, naming it."""
        return cls(f"{type(error).__name__}: {error}")


@dataclass(frozen=True)
class BrokerOptions:
    """How a broker lays out the deployment's messaging, whichever backend it is."""

    #: RabbitMQ's topic exchange, Kafka's topic.
    exchange: str = "mercato.events"
    #: RabbitMQ: the type of the groups' queues ("classic" or "quorum").
    queue_type: str = "classic"
    #: RabbitMQ: the delay before each retry, one delay queue each.
    retry_delays: tuple[float, ...] = ()
    #: The memory broker: how long a publish waits for its consumer groups to subscribe.
    startup_grace: float = 0.0
    #: RabbitMQ: the groups (and their routing keys) whose queues are declared and bound on
    #: connect, before anything is published, so that no event is dropped for a group that
    #: has not connected yet.
    known_groups: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One outbox row on its way out. ``ref`` is the row's sequence number."""

    ref: int
    event_id: str
    event_type: str
    body: bytes
    key: str | None = None
    target: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


#: Called with an outbox ``ref`` once every consumer group has settled the message (memory).
Settled = Callable[[int], None]


class Delivery(ABC):
    """One message handed to a consumer; exactly one of ack/retry/dead_letter/release is
    called."""

    body: bytes
    attempt: int  # 1 for the first delivery
    target: str | None
    redelivered: bool = False

    @abstractmethod
    async def ack(self) -> None: ...

    @abstractmethod
    async def retry(self, delay: float) -> None:
        """Deliver again after ``delay`` seconds, with ``attempt + 1``."""

    @abstractmethod
    async def dead_letter(self, reason: str) -> None:
        """Move the message to the group's dead-letter queue."""

    @abstractmethod
    async def release(self) -> None:
        """Give the message back unsettled, its attempt not counted: it is delivered again
        (to this group, now or once it consumes again)."""


DeliveryCallback = Callable[[Delivery], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ConsumerGroup:
    """What a group subscribes with: its name, the event types its queue is bound to, the
    callback of each delivery and how many deliveries it handles at once."""

    name: str
    routing_keys: tuple[str, ...]
    callback: DeliveryCallback
    prefetch: int


class Subscription(ABC):
    async def start(self) -> None:  # noqa: B027 - optional
        """Begin taking messages (a backend that cannot connect yet keeps trying)."""

    @abstractmethod
    async def stop(self, grace: float) -> None:
        """Stop taking messages and wait up to ``grace`` seconds for those being handled."""

    @abstractmethod
    async def pending(self) -> int:
        """Messages of this group not yet settled (queued, in flight or waiting to retry)."""


class Broker(ABC):
    name: str = "broker"
    #: True when a message counts as delivered only once every group has handled it
    #: (memory): the relay then marks rows sent from the ``settled`` callback.
    settles_on_delivery: bool = False

    async def start(self) -> None:  # noqa: B027 - optional
        """Connect (and declare the topology)."""

    async def close(self) -> None:  # noqa: B027 - optional
        """Disconnect; nothing in flight is lost (unacked messages are redelivered)."""

    @abstractmethod
    async def publish(
        self, messages: Sequence[OutgoingMessage], settled: Settled | None = None
    ) -> None:
        """Return once the broker confirmed every message; raise :class:`BrokerUnavailable`."""

    async def subscribe(
        self,
        group: str,
        routing_keys: Sequence[str],
        callback: DeliveryCallback,
        *,
        prefetch: int,
    ) -> Subscription:
        """Start consuming the durable queue of ``group``, bound to ``routing_keys``."""
        subscription = self._new_subscription(
            ConsumerGroup(group, tuple(routing_keys), callback, prefetch)
        )
        await subscription.start()
        return subscription

    @abstractmethod
    def _new_subscription(self, group: ConsumerGroup) -> Subscription:
        """The subscription of ``group``, not started yet."""

    @abstractmethod
    async def ping(self) -> None:
        """Return when the broker answers; raise otherwise."""

    async def dead_letter_count(self, group: str) -> int:
        """Messages waiting in the group's dead-letter queue (as the broker sees it)."""
        return 0


S = TypeVar("S", bound=Subscription)
C = TypeVar("C")


class RemoteBroker(Broker, Generic[S, C]):
    """A broker across the network, through a client ``C`` that connects on first use
    (``start`` only tries, so a service starts while the broker is down). Closing it stops
    its subscriptions ``S``."""

    def __init__(self) -> None:
        self._subscriptions: list[S] = []
        self._client: C | None = None
        self._connecting = asyncio.Lock()

    async def start(self) -> None:
        try:
            await self._ready()
        except BrokerUnavailable as exc:  # the relay and consumers keep trying
            log.warning("the broker is not answering yet", broker=self.name, error=str(exc))

    async def _ready(self) -> C:
        """The connected client, connecting (once, whoever asks first) if needed; raise
        :class:`BrokerUnavailable` when the broker does not answer."""
        if self._client is None:
            async with self._connecting:
                if self._client is None:
                    self._client = await self._connect()
        return self._client

    @abstractmethod
    async def _connect(self) -> C:
        """Connect (and declare the topology); raise :class:`BrokerUnavailable`."""

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.stop(0.0)
        await self._disconnect()

    @abstractmethod
    async def _disconnect(self) -> None:
        """Close the connection (bounded); the subscriptions are already stopped."""

    def _forget(self, subscription: S) -> None:
        """Called by a subscription that stopped."""
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
