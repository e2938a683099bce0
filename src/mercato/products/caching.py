"""Cache-aside for catalogue reads, and the HTTP validators of what is served.

A read is cached as its final representation: the JSON body, its strong ``ETag`` and its
``Last-Modified``, so a hit costs one cache lookup and no serialization. Every write
invalidates after its commit and before it returns, through :meth:`CatalogueCache.invalidate`.

Why not ``Cache.get_or_load`` directly: a read that loaded from the database *before* a
write committed must not store its (now stale) result *after* that write invalidated, or the
next read after a successful write would be stale. Each invalidation bumps a generation;
a load stores its result only if no invalidation happened while it ran, and concurrent
misses share one load per (key, generation) (single flight), so a read that starts after an
invalidation never joins a load that started before it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Final

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mercato.platform.cache import Cache

log = structlog.stdlib.get_logger("mercato.products.cache")

LISTS_TAG: Final = "lists"
_CACHE_OUTAGES: Final = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Representation:
    """A response body with its validators."""

    body: bytes
    etag: str
    last_modified: datetime | None = None

    @classmethod
    def of(cls, body: bytes, last_modified: datetime | None = None) -> Representation:
        """A strong ETag derived from the exact bytes served: any change changes it."""
        digest = hashlib.blake2b(body, digest_size=16).hexdigest()
        modified = last_modified.astimezone(UTC).replace(microsecond=0) if last_modified else None
        return cls(body, f'"{digest}"', modified)

    def encode(self) -> bytes:
        modified = self.last_modified.isoformat() if self.last_modified else ""
        return b"%s\n%s\n%s" % (self.etag.encode(), modified.encode(), self.body)

    @classmethod
    def decode(cls, data: bytes) -> Representation:
        etag, modified, body = data.split(b"\n", 2)
        return cls(
            body,
            etag.decode(),
            datetime.fromisoformat(modified.decode()) if modified else None,
        )

    @property
    def http_last_modified(self) -> str | None:
        return format_datetime(self.last_modified, usegmt=True) if self.last_modified else None

    def not_modified(self, if_none_match: str | None, if_modified_since: str | None) -> bool:
        """Whether a GET with these conditional headers gets 304 (RFC 9110 13.1)."""
        if if_none_match is not None:
            return etag_matches(self.etag, if_none_match)
        if if_modified_since is not None and self.last_modified is not None:
            try:
                since = parsedate_to_datetime(if_modified_since)
            except (TypeError, ValueError):
                return False
            if since.tzinfo is None:
                return False
            return self.last_modified <= since
        return False


def etag_matches(etag: str, if_none_match: str) -> bool:
    """``If-None-Match`` uses the weak comparison: ``W/"x"`` matches ``"x"``; ``*`` any."""
    wanted = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == wanted:
            return True
    return False


def list_key(params: Mapping[str, object]) -> str:
    """One key per distinct list query; parameters are normalized by the caller."""
    canonical = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    return "list:" + hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


def product_key(product_id: str) -> str:
    return f"product:{product_id}"


Loader = Callable[[], Awaitable[Representation]]


class CatalogueCache:
    """The catalogue's read cache over the service's platform :class:`Cache`.

    Built in ``create_app`` (no I/O) and bound to the context's cache in the lifespan.
    With ``enabled=False`` every read goes to the database (the benchmark's cold runs).
    A cache outage degrades reads to the database rather than failing them.
    """

    def __init__(self, *, enabled: bool = True, ttl: float | None = None) -> None:
        self.enabled = enabled
        self.ttl = ttl
        self._cache: Cache | None = None
        self._generation = 0
        self._flights: dict[tuple[str, int], asyncio.Task[Representation]] = {}

    def bind(self, cache: Cache | None) -> None:
        self._cache = cache

    @property
    def generation(self) -> int:
        return self._generation

    async def product(self, product_id: str, load: Loader) -> Representation:
        return await self._read(product_key(product_id), load, tags=())

    async def product_list(self, params: Mapping[str, object], load: Loader) -> Representation:
        return await self._read(list_key(params), load, tags=(LISTS_TAG,))

    async def invalidate(self, product_ids: Iterable[str] = ()) -> None:
        """Forget the given products and every list (a list may show any product)."""
        self._generation += 1
        cache = self._cache
        if cache is None:
            return
        keys = [product_key(product_id) for product_id in product_ids]
        if keys:
            await cache.delete(*keys)
        await cache.invalidate_tags(LISTS_TAG)

    def forget_in_flight(self) -> None:
        """Make in-flight loads discard their results (another instance wrote)."""
        self._generation += 1

    async def _read(self, key: str, load: Loader, *, tags: Iterable[str]) -> Representation:
        cache = self._cache
        if not self.enabled or cache is None:
            return await load()
        try:
            hit = await cache.get(key)
        except _CACHE_OUTAGES as exc:
            log.warning("cache unavailable; reading from the database", error=repr(exc))
            return await load()
        if hit is not None:
            return Representation.decode(hit)
        flight = (key, self._generation)
        task = self._flights.get(flight)
        if task is None:
            task = asyncio.create_task(self._load_and_store(cache, key, load, list(tags)))
            self._flights[flight] = task
            task.add_done_callback(functools.partial(self._land, flight))
        # Shielded: a caller that gives up does not cancel the load others wait for.
        return await asyncio.shield(task)

    def _land(self, flight: tuple[str, int], task: asyncio.Task[Representation]) -> None:
        if self._flights.get(flight) is task:
            del self._flights[flight]
        if not task.cancelled():
            task.exception()  # retrieved here, so an unawaited failure is not reported twice

    async def _load_and_store(
        self, cache: Cache, key: str, load: Loader, tags: list[str]
    ) -> Representation:
        generation = self._generation
        representation = await load()
        if self._generation != generation:
            return representation  # a write committed meanwhile: serve it, do not keep it
        try:
            await cache.set(key, representation.encode(), ttl=self.ttl, tags=tags)
            if self._generation != generation:
                # The invalidation raced the store (another connection): drop it again.
                await cache.delete(key)
        except _CACHE_OUTAGES as exc:
            log.warning("cache unavailable; result not cached", error=repr(exc))
        return representation
