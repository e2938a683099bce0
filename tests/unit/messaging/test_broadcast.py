"""The in-process broadcast bus (Redis pub/sub's stand-in when REDIS_URL is unset)."""

from __future__ import annotations

import pytest

from mercato.messaging import Broadcast
from mercato.messaging.broadcast import MemoryBroadcast

pytestmark = pytest.mark.anyio


async def test_every_instance_hears_a_broadcast_once() -> None:
    first, second = Broadcast.from_url(None), Broadcast.from_url(None)
    assert isinstance(first, MemoryBroadcast)
    heard: list[tuple[str, str]] = []
    await first.start()
    await second.start()
    await first.subscribe("cache.products", lambda p: heard.append(("first", p)))
    await second.subscribe("cache.products", lambda p: heard.append(("second", p)))
    assert await first.publish("cache.products", "42") == 2
    assert sorted(heard) == [("first", "42"), ("second", "42")]
    await first.close()
    await second.close()


async def test_unsubscribe_and_other_channels_hear_nothing() -> None:
    bus = Broadcast.from_url(None)
    await bus.start()
    heard: list[str] = []

    async def listener(payload: str) -> None:
        heard.append(payload)

    unsubscribe = await bus.subscribe("a", listener)
    await bus.publish("b", "nope")
    await bus.publish("a", "yes")
    await unsubscribe()
    assert await bus.publish("a", "late") == 0
    assert heard == ["yes"]
    await bus.close()


async def test_a_failing_listener_does_not_stop_the_others() -> None:
    bus = Broadcast.from_url(None)
    await bus.start()
    heard: list[str] = []

    def broken(payload: str) -> None:
        raise RuntimeError("boom")

    await bus.subscribe("a", broken)
    await bus.subscribe("a", heard.append)
    await bus.publish("a", "x")
    assert heard == ["x"]
    await bus.close()


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        Broadcast.from_url("amqp://localhost")
