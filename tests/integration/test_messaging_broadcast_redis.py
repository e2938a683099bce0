"""Broadcasts across instances through Redis pub/sub."""

from __future__ import annotations

import asyncio

import pytest

from mercato.messaging import Broadcast
from mercato.messaging.broadcast import RedisBroadcast
from support.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_two_instances_hear_each_other_through_redis(
    redis_url: str, redis_prefix: str
) -> None:
    first = Broadcast.from_url(redis_url, prefix=redis_prefix)
    second = Broadcast.from_url(redis_url, prefix=redis_prefix)
    assert isinstance(first, RedisBroadcast)
    await first.start()
    await second.start()
    heard: asyncio.Queue[str] = asyncio.Queue()
    try:
        await second.subscribe("cache.products", heard.put_nowait)
        # the subscription is live once Redis counts a receiver
        assert await eventually(lambda: first.publish("cache.products", "ping"), within=1) == 1
        assert await asyncio.wait_for(heard.get(), 5) == "ping"
        other = Broadcast.from_url(redis_url, prefix=f"{redis_prefix}-other")
        await other.start()
        assert await other.publish("cache.products", "elsewhere") == 0
        await other.close()
    finally:
        await first.close()
        await second.close()


async def test_publishing_to_an_unreachable_redis_is_dropped_not_raised() -> None:
    from support.servers import free_port

    bus = Broadcast.from_url(f"redis://127.0.0.1:{free_port()}/0")
    await bus.start()
    assert await bus.publish("x", "y") == 0
    await bus.close()
