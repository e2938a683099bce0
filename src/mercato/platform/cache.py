"""A small async cache with two backends: in-process memory and Redis.

Values are bytes; callers serialize (products cache pre-serialized JSON). Every cache has a
namespace, so services sharing one Redis never see each other's keys, and prefix and tag
invalidation never reach outside it. Both backends share one implementation of
:meth:`Cache.get_or_load`, whose single flight makes concurrent misses on one key in this
process call the loader once.

``create_cache`` picks the backend from settings and does no network I/O: the Redis client
connects on its first command, so the composition root can build it outside the event loop
and ``lifespan`` can ``ping`` and ``close`` it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import math
import re
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import redis.asyncio as redis

P = ParamSpec("P")
R = TypeVar("R")

OnResult = Callable[[str, bool], None]
"""Called with ``(key, hit)`` after every lookup; lets metrics count hits and misses."""

_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_REDIS_BATCH = 500


def _check_namespace(namespace: str) -> str:
    # ':' and '#' separate the namespace from keys and tag sets, and glob characters would
    # let SCAN patterns reach into other namespaces; a plain word rules out both.
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


class _SingleFlight:
    """Shares one in-flight load per key among the concurrent callers of this process."""

    def __init__(self) -> None:
        self._loads: dict[str, asyncio.Task[bytes]] = {}

    async def run(self, key: str, load: Callable[[], Coroutine[Any, Any, bytes]]) -> bytes:
        task = self._loads.get(key)
        if task is None:
            task = asyncio.create_task(load())
            self._loads[key] = task
            task.add_done_callback(functools.partial(self._forget, key))
        # The load runs in its own task behind a shield: a caller that gives up (a client
        # disconnects) stops waiting without cancelling the load the others are waiting for.
        return await asyncio.shield(task)

    def _forget(self, key: str, task: asyncio.Task[bytes]) -> None:
        if self._loads.get(key) is task:
            del self._loads[key]


class Cache(ABC):
    """The cache interface every service codes against.

    ``ttl`` is in seconds; ``None`` means the cache's ``default_ttl``, and a cache without a
    default keeps the entry until it is deleted, invalidated or evicted. Tags group entries
    for :meth:`invalidate_tags`: invalidating a tag removes every entry last set with it (an
    entry once set with a tag may also be removed, so over-invalidation is possible, never
    under-invalidation).
    """

    def __init__(
        self,
        namespace: str,
        *,
        default_ttl: float | None = None,
        on_result: OnResult | None = None,
    ) -> None:
        self.namespace = _check_namespace(namespace)
        self.default_ttl = _check_ttl(default_ttl)
        self._on_result = on_result
        self._flight = _SingleFlight()

    async def get(self, key: str) -> bytes | None:
        """The value stored under ``key``, or ``None`` if it is missing or expired."""
        value = await self._get(key)
        if self._on_result is not None:
            self._on_result(key, value is not None)
        return value

    async def get_or_load(
        self,
        key: str,
        loader: Callable[[], Awaitable[bytes]],
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
    ) -> bytes:
        """The cached value, or the loader's value after storing it.

        Concurrent misses on one key in this process share a single call of ``loader`` (the
        first caller's ``ttl`` and ``tags`` apply). If the loader raises, every waiter gets
        the exception and nothing is stored, so the next call loads again.
        """
        ttl = _check_ttl(ttl)
        tag_list = _tag_list(tags)
        value = await self.get(key)
        if value is not None:
            return value

        async def load_and_store() -> bytes:
            # A load that finished between our miss and now has stored its value already.
            stored = await self._get(key)
            if stored is not None:
                return stored
            loaded = await loader()
            await self.set(key, loaded, ttl=ttl, tags=tag_list)
            return loaded

        return await self._flight.run(key, load_and_store)

    def _ttl(self, ttl: float | None) -> float | None:
        return self.default_ttl if ttl is None else _check_ttl(ttl)

    @abstractmethod
    async def _get(self, key: str) -> bytes | None: ...

    @abstractmethod
    async def set(
        self, key: str, value: bytes, *, ttl: float | None = None, tags: Iterable[str] = ()
    ) -> None:
        """Store ``value`` under ``key``, replacing any earlier value and its expiry."""

    @abstractmethod
    async def delete(self, *keys: str) -> None:
        """Remove ``keys``; missing keys are ignored."""

    @abstractmethod
    async def delete_prefix(self, prefix: str) -> int:
        """Remove every key of this namespace starting with ``prefix``; return how many."""

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
        on_result: OnResult | None = None,
    ) -> None:
        super().__init__(namespace, default_ttl=default_ttl, on_result=on_result)
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._tagged: dict[str, set[str]] = {}

    async def _get(self, key: str) -> bytes | None:
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

    async def delete_prefix(self, prefix: str) -> int:
        return self._remove_live([key for key in self._entries if key.startswith(prefix)])

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

_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")


def _escape_glob(text: str) -> str:
    return _GLOB_SPECIAL.sub(r"\\\1", text)


class RedisCache(Cache):
    """A cache shared by every instance of a service, on Redis.

    Entries are stored at ``{namespace}:{key}`` and tag sets at ``{namespace}#tag:{tag}``,
    outside the entries' key space, so no key can collide with a tag set and
    ``delete_prefix`` never touches tag bookkeeping. The client must be created with
    ``decode_responses=False``. :meth:`close` closes the client only if this cache created
    it (:meth:`from_url`).
    """

    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        *,
        default_ttl: float | None = None,
        on_result: OnResult | None = None,
    ) -> None:
        super().__init__(namespace, default_ttl=default_ttl, on_result=on_result)
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
        on_result: OnResult | None = None,
        max_connections: int = 100,
    ) -> RedisCache:
        """A cache with its own client for ``url``; it connects on first use.

        More than ``max_connections`` concurrent commands wait for a free connection
        (redis-py's default pool raises ``MaxConnectionsError`` instead).
        """
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, decode_responses=False
        )
        cache = cls(
            redis.Redis.from_pool(pool),
            namespace,
            default_ttl=default_ttl,
            on_result=on_result,
        )
        cache._owns_client = True
        return cache

    def _key(self, key: str) -> str:
        return f"{self.namespace}:{key}"

    def _tag_key(self, tag: str) -> str:
        return f"{self.namespace}#tag:{tag}"

    async def _get(self, key: str) -> bytes | None:
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

    async def delete_prefix(self, prefix: str) -> int:
        pattern = _escape_glob(self._key(prefix)) + "*"
        removed = 0
        batch: list[bytes] = []
        async for found in self._client.scan_iter(match=pattern, count=_REDIS_BATCH):
            batch.append(found)
            if len(batch) >= _REDIS_BATCH:
                removed += await self._client.unlink(*batch)
                batch.clear()
        if batch:
            removed += await self._client.unlink(*batch)
        return removed

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
    on_result: OnResult | None = None,
) -> Cache:
    """The cache the settings ask for: Redis at ``redis_url``, else in-process memory.

    No network I/O happens here; a Redis cache connects on its first command.
    ``max_entries`` bounds only the memory backend (Redis is bounded by its ``maxmemory``).
    """
    if redis_url:
        return RedisCache.from_url(
            redis_url, namespace, default_ttl=default_ttl, on_result=on_result
        )
    return MemoryCache(
        namespace, max_entries=max_entries, default_ttl=default_ttl, on_result=on_result
    )


def _json_encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _json_decode(data: bytes) -> Any:
    return json.loads(data)


def cached(
    cache: Cache | Callable[[], Cache],
    *,
    key: Callable[..., str],
    ttl: float | None = None,
    tags: Iterable[str] | Callable[..., Iterable[str]] = (),
    encode: Callable[[Any], bytes] = _json_encode,
    decode: Callable[[bytes], Any] = _json_decode,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Cache-aside for a coroutine function, with single flight per key.

    ``cache`` is a :class:`Cache`, or a zero-argument callable returning one, looked up on
    every call, so a module-level decorator can use the cache the app builds at start-up.
    ``key`` and, if callable, ``tags`` receive the function's arguments::

        @cached(lambda: app_cache, key=lambda product_id: f"product:{product_id}",
                tags=lambda product_id: [f"product:{product_id}"], ttl=60)
        async def product_view(product_id: int) -> dict[str, object]: ...

    The default codec is the standard library's JSON, so the return value must be
    JSON-serializable and comes back as JSON types (a tuple returns as a list); values such
    as ``Decimal`` or ``datetime`` raise ``TypeError`` rather than returning as strings.
    Pass ``encode`` and ``decode`` for anything else. Arguments not in ``key`` must not
    change the result.
    """

    def decorate(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"@cached needs a coroutine function, got {func!r}")

        @functools.wraps(func)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            target = cache if isinstance(cache, Cache) else cache()
            entry_tags = tags(*args, **kwargs) if callable(tags) else tags

            async def load() -> bytes:
                return encode(await func(*args, **kwargs))

            data = await target.get_or_load(key(*args, **kwargs), load, ttl=ttl, tags=entry_tags)
            result: R = decode(data)
            return result

        return wrapper

    return decorate
