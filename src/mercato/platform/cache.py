"""A small async cache with two backends: in-process memory and Redis.

Values are bytes; callers serialize (products cache pre-serialized JSON). Every cache has a
namespace, so services sharing one Redis never see each other's keys, and tag invalidation
never reaches outside it. How a miss is loaded is the caller's business: the catalogue's
cache-aside, with its single flight and its guard against storing a read that a write
overtook, is in products/caching.py.

``create_cache`` picks the backend from settings and does no network I/O: the Redis client
connects on its first command, so the composition root can build it outside the event loop
and ``lifespan`` can ``ping`` and ``close`` it.
"""

from __future__ import annotations

import math
import re
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis.asyncio as redis

_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_REDIS_BATCH = 500


def _check_namespace(namespace: str) -> str:
    # ':' and '#' separate the namespace from keys and tag sets, and glob characters would
    # let a SCAN for one namespace's keys reach into others; a plain word rules out both.
    if not _NAMESPACE.fullmatch(namespace):
        raise ValueError(f"cache namespace must match {_NAMESPACE.pattern!r}, got {namespace!r}")
    return namespace


def _check_ttl(ttl: float | None) -> float | None:
    if ttl is not None and not (math.isfinite(ttl) and ttl > 0):
        raise ValueError(f"cache ttl must be a positive number of seconds or None, got {ttl!r}")
    return ttl


def _tag_list(tags: Iterable[str]) -> list[str]:
    if isinstance(tags, str):
        raise TypeError("tags must be an iterable of tags, not one string")
    return list(dict.fromkeys(tags))


class Cache(ABC):
    """The cache interface every service codes against.

    ``ttl`` is in seconds; ``None`` means the cache's ``default_ttl``, and a cache without a
    default keeps the entry until it is deleted, invalidated or evicted. Tags group entries
    for :meth:`invalidate_tags`: invalidating a tag removes every entry last set with it (an
    entry once set with a tag may also be removed, so over-invalidation is possible, never
    under-invalidation).
    """

    def __init__(self, namespace: str, *, default_ttl: float | None = None) -> None:
        self.namespace = _check_namespace(namespace)
        self.default_ttl = _check_ttl(default_ttl)

    def _ttl(self, ttl: float | None) -> float | None:
        return self.default_ttl if ttl is None else _check_ttl(ttl)

    @abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or ``None`` if it is missing or expired."""

    @abstractmethod
    async def set(
        self, key: str, value: bytes, *, ttl: float | None = None, tags: Iterable[str] = ()
    ) -> None:
        """Store ``value`` under ``key``, replacing any earlier value and its expiry."""

    @abstractmethod
    async def delete(self, *keys: str) -> None:
        """Remove ``keys``; missing keys are ignored."""

    @abstractmethod
    async def invalidate_tags(self, *tags: str) -> int:
        """Remove every entry set with any of ``tags``; return how many."""

    @abstractmethod
    async def ping(self) -> None:
        """Return if the cache answers; raise otherwise (for readiness checks)."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections; the cache is not used afterwards."""


@dataclass(slots=True)
class _Entry:
    value: bytes
    expires_at: float | None
    tags: list[str]


class MemoryCache(Cache):
    """A per-process cache bounded to ``max_entries`` with least-recently-used eviction.

    For tests, development and single-instance deployments. ``clock`` is injectable so tests
    control expiry. Expired entries are never returned; they are dropped when read or when
    eviction reaches them.
    """

    def __init__(
        self,
        namespace: str,
        *,
        max_entries: int = 10_000,
        default_ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(namespace, default_ttl=default_ttl)
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._tagged: dict[str, set[str]] = {}

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._expired(entry):
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry.value

    async def set(
        self, key: str, value: bytes, *, ttl: float | None = None, tags: Iterable[str] = ()
    ) -> None:
        ttl = self._ttl(ttl)
        tag_list = _tag_list(tags)
        self._remove(key)
        expires_at = None if ttl is None else self._clock() + ttl
        self._entries[key] = _Entry(value, expires_at, tag_list)
        for tag in tag_list:
            self._tagged.setdefault(tag, set()).add(key)
        while len(self._entries) > self.max_entries:
            self._remove(next(iter(self._entries)))

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._remove(key)

    async def invalidate_tags(self, *tags: str) -> int:
        keys = {key for tag in tags for key in self._tagged.get(tag, ())}
        return self._remove_live(keys)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._entries.clear()
        self._tagged.clear()

    def _expired(self, entry: _Entry) -> bool:
        return entry.expires_at is not None and entry.expires_at <= self._clock()

    def _remove_live(self, keys: Iterable[str]) -> int:
        """Remove ``keys``, counting only those not yet expired (as Redis would)."""
        removed = 0
        for key in keys:
            entry = self._remove(key)
            if entry is not None and not self._expired(entry):
                removed += 1
        return removed

    def _remove(self, key: str) -> _Entry | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            for tag in entry.tags:
                keys = self._tagged[tag]
                keys.discard(key)
                if not keys:
                    del self._tagged[tag]
        return entry


# Stores an entry and adds it to its tag sets atomically. A tag set lives as long as its
# longest-lived entry, so tag bookkeeping of expired entries does not pile up in Redis, and
# a tag set holding an entry without expiry never expires.
# KEYS: the entry, then its tag sets. ARGV: the value, the ttl in ms ("" for none).
_SET_WITH_TAGS = """
local ttl = tonumber(ARGV[2])
if ttl then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
for i = 2, #KEYS do
  local left = redis.call('PTTL', KEYS[i])
  redis.call('SADD', KEYS[i], KEYS[1])
  if not ttl then
    redis.call('PERSIST', KEYS[i])
  elseif left == -2 or (left >= 0 and left < ttl) then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
"""


class RedisCache(Cache):
    """A cache shared by every instance of a service, on Redis.

    Entries are stored at ``{namespace}:{key}`` and tag sets at ``{namespace}#tag:{tag}``,
    outside the entries' key space, so no key can collide with a tag set. The client must be
    created with ``decode_responses=False``. :meth:`close` closes the client only if this
    cache created it (:meth:`from_url`).
    """

    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        *,
        default_ttl: float | None = None,
    ) -> None:
        super().__init__(namespace, default_ttl=default_ttl)
        self._client = client
        self._owns_client = False
        self._set_with_tags = client.register_script(_SET_WITH_TAGS)

    @classmethod
    def from_url(
        cls,
        url: str,
        namespace: str,
        *,
        default_ttl: float | None = None,
        max_connections: int = 100,
    ) -> RedisCache:
        """A cache with its own client for ``url``; it connects on first use.

        More than ``max_connections`` concurrent commands wait for a free connection
        (redis-py's default pool raises ``MaxConnectionsError`` instead).
        """
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, decode_responses=False
        )
        cache = cls(redis.Redis.from_pool(pool), namespace, default_ttl=default_ttl)
        cache._owns_client = True
        return cache

    def _key(self, key: str) -> str:
        return f"{self.namespace}:{key}"

    def _tag_key(self, tag: str) -> str:
        return f"{self.namespace}#tag:{tag}"

    async def get(self, key: str) -> bytes | None:
        value = await self._client.get(self._key(key))
        if value is None or isinstance(value, bytes):
            return value
        raise TypeError("RedisCache needs a client created with decode_responses=False")

    async def set(
        self, key: str, value: bytes, *, ttl: float | None = None, tags: Iterable[str] = ()
    ) -> None:
        ttl = self._ttl(ttl)
        tag_list = _tag_list(tags)
        ttl_ms = None if ttl is None else max(1, math.ceil(ttl * 1000))
        if not tag_list:
            await self._client.set(self._key(key), value, px=ttl_ms)
            return
        await self._set_with_tags(
            keys=[self._key(key), *map(self._tag_key, tag_list)],
            args=[value, "" if ttl_ms is None else ttl_ms],
        )

    async def delete(self, *keys: str) -> None:
        if keys:
            await self._client.unlink(*map(self._key, keys))

    async def invalidate_tags(self, *tags: str) -> int:
        if not tags:
            return 0
        # Read and drop each tag set in one transaction: an entry tagged after it is added to
        # a fresh set, so no entry set with the tag before this call escapes.
        async with self._client.pipeline(transaction=True) as pipe:
            for tag in tags:
                pipe.smembers(self._tag_key(tag))
                pipe.unlink(self._tag_key(tag))
            replies = await pipe.execute()
        keys = list({key for members in replies[::2] for key in members})
        removed = 0
        for start in range(0, len(keys), _REDIS_BATCH):
            removed += await self._client.unlink(*keys[start : start + _REDIS_BATCH])
        return removed

    async def ping(self) -> None:
        await self._client.ping()

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def create_cache(
    *,
    redis_url: str | None,
    namespace: str,
    max_entries: int = 10_000,
    default_ttl: float | None = None,
) -> Cache:
    """The cache the settings ask for: Redis at ``redis_url``, else in-process memory.

    No network I/O happens here; a Redis cache connects on its first command.
    ``max_entries`` bounds only the memory backend (Redis is bounded by its ``maxmemory``).
    """
    if redis_url:
        return RedisCache.from_url(redis_url, namespace, default_ttl=default_ttl)
    return MemoryCache(namespace, max_entries=max_entries, default_ttl=default_ttl)
