"""The in-process broker: topic routing, consumer groups, ack, retry, dead letter.

One instance is shared by every service app of the process (``mercato up`` creates it and
hands it to each; a test with several apps does the same), so they see each other's events.
A group's queue lives as long as the broker, like a durable queue: messages wait there while
its consumers restart.

Nothing survives the process, which is why this backend *settles on delivery*: the outbox
row counts as sent only once every group bound at publish time handled (or dead-lettered)
it. A crash leaves the row unsent, and the next start publishes it again; consumers skip
what they had already handled (inbox).

Services of one process start concurrently, so a relay may publish before another
service's consumer subscribed. During the *startup grace* (``MESSAGING_STARTUP_GRACE``
seconds from the first publish) every published message is also kept aside and
handed to each group that subscribes later in that window, as a durable queue would have
kept it; it settles only once the window closed and every group that got it handled it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from mercato.messaging.brokers.base import (
    Broker,
    ConsumerGroup,
    Delivery,
    DeliveryCallback,
    OutgoingMessage,
    Settled,
    Subscription,
)
from mercato.platform.logging import get_logger
from mercato.platform.shutdown import wait_ended

log = get_logger("mercato.messaging.memory")


@dataclass(eq=False)
class _Tracker:
    """How many groups still have to settle one published message."""

    ref: int
    pending: int
    settled: Settled | None

    def done(self) -> None:
        self.pending -= 1
        if self.pending == 0 and self.settled is not None:
            self.settled(self.ref)


@dataclass(eq=False)
class _Queued:
    message: OutgoingMessage
    tracker: _Tracker
    attempt: int = 1


@dataclass(eq=False)
class DeadLetter:
    message: OutgoingMessage
    reason: str
    attempts: int


@dataclass(eq=False)
class _Group:
    name: str
    bindings: frozenset[str] = frozenset()
    queue: asyncio.Queue[_Queued] = field(default_factory=asyncio.Queue)
    in_flight: int = 0
    retrying: int = 0
    dead: list[DeadLetter] = field(default_factory=list)

    def matches(self, message: OutgoingMessage) -> bool:
        if message.target is not None and message.target != self.name:
            return False
        return message.event_type in self.bindings or "#" in self.bindings


class MemoryBroker(Broker):
    name = "memory"
    settles_on_delivery = True

    def __init__(self, startup_grace: float = 0.0) -> None:
        self.groups: dict[str, _Group] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self.startup_grace = startup_grace
        #: The loop and the end of the startup grace, set when the first message is
        #: published (the broker may be created before the event loop runs, as
        #: ``mercato worker`` does).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._grace_until = 0.0
        self._parked: list[tuple[OutgoingMessage, _Tracker, set[str]]] = []

    def _first_use(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._grace_until = self._loop.time() + self.startup_grace
            if self.startup_grace > 0:
                self._loop.call_at(self._grace_until, self._end_grace)
        return self._loop

    @property
    def in_grace(self) -> bool:
        return self._first_use().time() < self._grace_until

    def _end_grace(self) -> None:
        parked, self._parked = self._parked, []
        for _, tracker, _taken in parked:
            tracker.done()

    async def publish(
        self, messages: Sequence[OutgoingMessage], settled: Settled | None = None
    ) -> None:
        for message in messages:
            groups = [group for group in self.groups.values() if group.matches(message)]
            keep = self.in_grace
            tracker = _Tracker(message.ref, len(groups) + 1, settled)
            for group in groups:
                group.queue.put_nowait(_Queued(message, tracker))
            if keep:  # the park holds one count until the grace ends
                self._parked.append((message, tracker, {group.name for group in groups}))
            else:
                tracker.done()  # every bound group has it (nobody listens: settled now)

    def _new_subscription(self, group: ConsumerGroup) -> Subscription:
        state = self.groups.get(group.name)
        if state is None:
            state = self.groups[group.name] = _Group(group.name)
        state.bindings = state.bindings | frozenset(group.routing_keys)
        for message, tracker, taken in self._parked:
            if state.name not in taken and state.matches(message):
                taken.add(state.name)
                tracker.pending += 1
                state.queue.put_nowait(_Queued(message, tracker))
        return _MemorySubscription(self, state, group.callback, group.prefetch)

    async def ping(self) -> None:
        return None

    async def dead_letter_count(self, group: str) -> int:
        state = self.groups.get(group)
        return len(state.dead) if state else 0

    def _schedule_retry(self, group: _Group, item: _Queued, delay: float) -> None:
        group.retrying += 1
        loop = asyncio.get_running_loop()

        def requeue() -> None:
            self._timers.discard(handle)
            group.retrying -= 1
            group.queue.put_nowait(item)

        handle = loop.call_later(delay, requeue)
        self._timers.add(handle)


class _MemoryDelivery(Delivery):
    def __init__(self, broker: MemoryBroker, group: _Group, item: _Queued) -> None:
        self.broker, self.group, self.item = broker, group, item
        self.body = item.message.body
        self.attempt = item.attempt
        self.target = item.message.target

    async def ack(self) -> None:
        self.item.tracker.done()

    async def retry(self, delay: float) -> None:
        self.item.attempt += 1
        self.broker._schedule_retry(self.group, self.item, delay)

    async def dead_letter(self, reason: str) -> None:
        self.group.dead.append(DeadLetter(self.item.message, reason, self.item.attempt))
        self.item.tracker.done()

    async def release(self) -> None:
        self.group.queue.put_nowait(self.item)  # the group's queue outlives its consumers


class _MemorySubscription(Subscription):
    def __init__(
        self, broker: MemoryBroker, group: _Group, callback: DeliveryCallback, prefetch: int
    ) -> None:
        self.broker, self.group, self.callback, self.prefetch = broker, group, callback, prefetch
        self._stopping = False
        self._waiting: set[asyncio.Task[None]] = set()
        self._workers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._work(), name=f"memory-consumer-{self.group.name}-{n}")
            for n in range(self.prefetch)
        ]

    async def _work(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        while not self._stopping:
            self._waiting.add(task)
            try:
                item = await self.group.queue.get()
            finally:
                self._waiting.discard(task)
            self.group.in_flight += 1
            try:
                await self.callback(_MemoryDelivery(self.broker, self.group, item))
            except Exception:  # the runner settles every message; this is a last resort
                log.exception("memory consumer callback failed", group=self.group.name)
                self.broker._schedule_retry(self.group, item, 1.0)
            finally:
                self.group.in_flight -= 1

    async def stop(self, grace: float) -> None:
        """Stop pulling, let the handlers in flight finish within ``grace`` seconds (their
        messages settle), cancel the rest; never waits longer than that (and a second)."""
        self._stopping = True
        for task in list(self._waiting):  # idle in queue.get(): holds nothing, ends at once
            task.cancel()
        await wait_ended(
            self._workers, within=grace, what=f"the handlers of consumer group {self.group.name}"
        )

    async def pending(self) -> int:
        return self.group.queue.qsize() + self.group.in_flight + self.group.retrying
