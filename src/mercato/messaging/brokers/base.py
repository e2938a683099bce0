"""What every broker backend offers the outbox relay and the consumer runner."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field


class BrokerUnavailable(Exception):
    """The broker did not take (or confirm) a message; the relay will try again."""


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


class Subscription(ABC):
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

    @abstractmethod
    async def subscribe(
        self,
        group: str,
        routing_keys: Sequence[str],
        callback: DeliveryCallback,
        *,
        prefetch: int,
    ) -> Subscription:
        """Start consuming the durable queue of ``group``, bound to ``routing_keys``."""

    @abstractmethod
    async def ping(self) -> None:
        """Return when the broker answers; raise otherwise."""

    async def dead_letter_count(self, group: str) -> int:
        """Messages waiting in the group's dead-letter queue (as the broker sees it)."""
        return 0
