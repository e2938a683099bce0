"""The cache contract on a real Redis, plus what only a shared server shows.

Each test works in the namespace ``redis_prefix`` (and ``{redis_prefix}-other``); every key
starting with it is removed afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError

from mercato.platform.cache import Cache, RedisCache

# tests/ is on sys.path through its conftest.py (no __init__.py files in tests).
from unit.platform.test_cache import CacheContract

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

MakeCache = Callable[..., Cache]


@pytest.fixture
async def raw_redis(redis_url: str, redis_prefix: str) -> AsyncIterator[redis.Redis]:
    """A plain client for looking behind the cache; removes the test's keys afterwards."""
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
        leftovers = [key async for key in client.scan_iter(match=f"{redis_prefix}*")]
        if leftovers:
            await client.unlink(*leftovers)
    finally:
        await client.aclose()


class TestRedisCache(CacheContract):
    @pytest.fixture
    def namespace(self, redis_prefix: str) -> str:
        return redis_prefix

    @pytest.fixture
    async def make_cache(self, redis_url: str, raw_redis: redis.Redis) -> AsyncIterator[MakeCache]:
        caches: list[RedisCache] = []

        def make(namespace: str, *, default_ttl: float | None = None) -> Cache:
            cache = RedisCache.from_url(redis_url, namespace, default_ttl=default_ttl)
            caches.append(cache)
            return cache

        yield make
        for cache in caches:
            await cache.close()

    @pytest.fixture
    def let_time_pass(self) -> Callable[[float], Awaitable[None]]:
        return asyncio.sleep

    async def test_instances_with_one_namespace_share_entries(
        self, cache: Cache, make_cache: MakeCache, namespace: str
    ) -> None:
        twin = make_cache(namespace)
        await cache.set("k", b"v", tags=["t"])
        assert await twin.get("k") == b"v"
        assert await twin.invalidate_tags("t") == 1
        assert await cache.get("k") is None
        await twin.set("k", b"w")
        assert await cache.get("k") == b"w"
        await cache.delete("k")
        assert await twin.get("k") is None

    async def test_tag_bookkeeping_expires_with_its_entries(
        self, cache: Cache, raw_redis: redis.Redis, namespace: str
    ) -> None:
        await cache.set("k", b"v", ttl=0.15, tags=["t", "u"])
        await asyncio.sleep(0.2)
        assert [key async for key in raw_redis.scan_iter(match=f"{namespace}*")] == []

    async def test_an_entry_without_ttl_keeps_its_tag_alive(self, cache: Cache) -> None:
        await cache.set("lasting", b"v", tags=["t"])
        await cache.set("short", b"v", ttl=0.15, tags=["t"])
        await asyncio.sleep(0.2)
        assert await cache.invalidate_tags("t") == 1
        assert await cache.get("lasting") is None

    async def test_bulk_writes_and_invalidations_beyond_one_batch_and_pool(
        self, cache: Cache
    ) -> None:
        keys = [f"bulk:{i}" for i in range(1200)]
        await asyncio.gather(*(cache.set(key, b"v", tags=["bulk"]) for key in keys))
        assert await cache.invalidate_tags("bulk") == 1200
        assert await cache.get("bulk:0") is None
        assert await cache.get("bulk:1199") is None

    async def test_a_client_that_decodes_responses_is_refused(
        self, redis_url: str, namespace: str, raw_redis: redis.Redis
    ) -> None:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        cache = RedisCache(client, namespace)
        try:
            await cache.set("k", b"v")
            with pytest.raises(TypeError, match="decode_responses"):
                await cache.get("k")
        finally:
            await client.aclose()


async def test_ping_raises_when_redis_does_not_answer() -> None:
    cache = RedisCache.from_url("redis://127.0.0.1:1/0", "products")
    try:
        with pytest.raises(RedisConnectionError):
            await cache.ping()
    finally:
        await cache.close()
