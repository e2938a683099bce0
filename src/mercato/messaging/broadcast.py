"""Fire-and-forget broadcasts to every instance (Redis pub/sub), distinct from events.

Events (outbox, broker) are durable and handled once per service. A broadcast is the
opposite: every running instance that listens gets it *now*, or never (an instance that is
down, or a Redis hiccup, misses it). It suits signals whose loss only costs freshness, such
as "drop your local copy of product 42" for in-process caches.

::

    broadcast = Broadcast.from_url(settings.redis_url, prefix="mercato")  # None: in-process
    await broadcast.start()
    unsubscribe = await broadcast.subscribe("cache.products", on_invalidate)
    await broadcast.publish("cache.products", "42")
    ...
    await unsubscribe()
    await broadcast.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import weakref
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any

from mercato.messaging.shutdown import bounded, pause, wait_ended
from mercato.platform.logging import get_logger

log = get_logger("mercato.messaging.broadcast")

#: How long the Redis reader waits for one message before checking whether to stop.
READ_TIMEOUT = 1.0
#: How long closing waits for each step (the reader, the subscription, the connection).
CLOSE_BOUND = READ_TIMEOUT + 2.0

Listener = Callable[[str], Awaitable[None] | None]
Unsubscribe = Callable[[], Awaitable[None]]


async def _call(listener: Listener, payload: str, channel: str) -> None:
    try:
        result = listener(payload)
        if inspect.isawaitable(result):
            await result
    except Exception:  # one listener's failure never stops the others
        log.exception("broadcast listener failed", channel=channel)


class Broadcast(ABC):
    """Publish a string to a channel; every subscriber of every instance gets it."""

    def __init__(self, prefix: str = "mercato") -> None:
        self.prefix = prefix
        self._listeners: dict[str, list[Listener]] = {}

    @staticmethod
    def from_url(url: str | None, *, prefix: str = "mercato") -> Broadcast:
        """Redis pub/sub for ``redis://`` / ``rediss://``; the in-process bus when unset."""
        if not url:
            return MemoryBroadcast(prefix)
        if url.startswith(("redis://", "rediss://", "unix://")):
            return RedisBroadcast(url, prefix=prefix)
        raise ValueError(f"unsupported broadcast URL scheme: {url.split(':', 1)[0]}")

    def _full(self, channel: str) -> str:
        return f"{self.prefix}:{channel}" if self.prefix else channel

    async def start(self) -> None:  # noqa: B027 - optional
        """Connect (a no-op in process)."""

    async def close(self) -> None:  # noqa: B027 - optional
        """Disconnect and drop every subscription."""

    @abstractmethod
    async def publish(self, channel: str, payload: str) -> int:
        """Send ``payload``; return how many subscribers got it (0 on failure, logged)."""

    async def subscribe(self, channel: str, listener: Listener) -> Unsubscribe:
        """Call ``listener(payload)`` for every message on ``channel``."""
        full = self._full(channel)
        first = full not in self._listeners
        self._listeners.setdefault(full, []).append(listener)
        if first:
            await self._listen(full)

        async def unsubscribe() -> None:
            listeners = self._listeners.get(full, [])
            if listener in listeners:
                listeners.remove(listener)
            if not listeners and full in self._listeners:
                del self._listeners[full]
                await self._unlisten(full)

        return unsubscribe

    async def _listen(self, channel: str) -> None:  # noqa: B027 - backends override
        pass

    async def _unlisten(self, channel: str) -> None:  # noqa: B027 - backends override
        pass

    async def _dispatch(self, channel: str, payload: str) -> None:
        for listener in list(self._listeners.get(channel, ())):
            await _call(listener, payload, channel)


_buses: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, set[MemoryBroadcast]] = (
    weakref.WeakKeyDictionary()
)


class MemoryBroadcast(Broadcast):
    """Every ``MemoryBroadcast`` on one event loop hears the others (one process)."""

    def _peers(self) -> set[MemoryBroadcast]:
        return _buses.setdefault(asyncio.get_running_loop(), set())

    async def start(self) -> None:
        self._peers().add(self)

    async def close(self) -> None:
        self._peers().discard(self)
        self._listeners.clear()

    async def publish(self, channel: str, payload: str) -> int:
        full = self._full(channel)
        receivers = [peer for peer in self._peers() if full in peer._listeners]
        for peer in receivers:
            await peer._dispatch(full, payload)
        return sum(len(peer._listeners.get(full, ())) for peer in receivers)


class RedisBroadcast(Broadcast):
    """Redis pub/sub; a reader task resubscribes by itself after a lost connection."""

    def __init__(self, url: str, *, prefix: str = "mercato") -> None:
        super().__init__(prefix)
        self.url = url
        self._client: Any = None
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    async def start(self) -> None:
        import redis.asyncio as redis

        self._closing.clear()
        self._client = redis.Redis.from_url(
            self.url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=15
        )
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)

    async def close(self) -> None:
        """Stop the reader (it notices within its read timeout) and disconnect, each step
        bounded: a Redis that does not answer never holds up a shutdown."""
        self._closing.set()
        if self._reader is not None:
            await wait_ended([self._reader], within=CLOSE_BOUND, what="the Redis broadcast reader")
            self._reader = None
        if self._pubsub is not None:
            await bounded(
                self._pubsub.aclose(), within=CLOSE_BOUND, what="closing the Redis subscription"
            )
        if self._client is not None:
            await bounded(
                self._client.aclose(), within=CLOSE_BOUND, what="closing the Redis connection"
            )
        self._listeners.clear()

    async def publish(self, channel: str, payload: str) -> int:
        if self._client is None:
            raise RuntimeError("call start() first")
        try:
            return int(await self._client.publish(self._full(channel), payload))
        except Exception as exc:  # fire and forget: a lost broadcast only costs freshness
            log.warning("broadcast not sent", channel=channel, error=f"{type(exc).__name__}")
            return 0

    async def _listen(self, channel: str) -> None:
        if self._pubsub is None:
            raise RuntimeError("call start() first")
        await self._pubsub.subscribe(channel)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(), name="redis-broadcast")

    async def _unlisten(self, channel: str) -> None:
        with contextlib.suppress(Exception):
            await self._pubsub.unsubscribe(channel)

    async def _read(self) -> None:
        delay = 0.2
        while not self._closing.is_set():
            try:
                message = await self._pubsub.get_message(timeout=READ_TIMEOUT)
                delay = 0.2
                if message is None or message.get("type") != "message":
                    continue
                channel = _text(message["channel"])
                await self._dispatch(channel, _text(message["data"]))
            except Exception as exc:
                if self._closing.is_set():
                    return
                log.warning("broadcast connection lost; resubscribing", error=type(exc).__name__)
                if await pause(delay, self._closing):
                    return
                delay = min(delay * 2, 5.0)
                with contextlib.suppress(Exception):
                    if self._listeners:
                        await self._pubsub.subscribe(*self._listeners)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
