"""Cache-aside for catalogue reads, and the HTTP validators of what is served.

A read is cached as its final representation: the JSON body, its strong ``ETag`` and its
``Last-Modified``, so a hit costs one cache lookup and no serialization. Every write
invalidates after its commit and before it returns, through :meth:`CatalogueCache.invalidate`.

Why misses are loaded here and not by the platform cache: a read that loaded from the
database *before* a write committed must not store its (now stale) result *after* that write
invalidated, or the next read after a successful write would be stale, and only the catalogue
knows when it invalidates. Each invalidation bumps a generation; a load stores its result
only if no invalidation happened while it ran, and concurrent misses share one load per
(key, generation) (single flight), so a read that starts after an invalidation never joins a
load that started before it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Final

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError as RedisReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mercato.platform.cache import Cache
from mercato.platform.errors import ServiceUnavailable

log = structlog.stdlib.get_logger("mercato.products.cache")

LISTS_TAG: Final = "lists"
#: A cache that cannot answer, or (READONLY) one failing over to a replica.
_CACHE_OUTAGES: Final = (
    RedisConnectionError,
    RedisTimeoutError,
    RedisReadOnlyError,
    ConnectionError,
    TimeoutError,
)


@dataclass(frozen=True, slots=True)
class Representation:
    """A response body with its validators, kept as the header values they are sent as,
    so that serving a cached read formats and parses nothing."""

    body: bytes
    etag: str
    #: An HTTP date (``Mon, 30 Nov 2026 10:00:00 GMT``), or None.
    http_last_modified: str | None = None

    @classmethod
    def of(cls, body: bytes, last_modified: datetime | None = None) -> Representation:
        """A strong ETag derived from the exact bytes served: any change changes it."""
        digest = hashlib.blake2b(body, digest_size=16).hexdigest()
        modified = (
            format_datetime(last_modified.astimezone(UTC), usegmt=True) if last_modified else None
        )
        return cls(body, f'"{digest}"', modified)

    def encode(self) -> bytes:
        return b"%s\n%s\n%s" % (
            self.etag.encode(),
            (self.http_last_modified or "").encode(),
            self.body,
        )

    @classmethod
    def decode(cls, data: bytes) -> Representation:
        etag, modified, body = data.split(b"\n", 2)
        return cls(body, etag.decode(), modified.decode() or None)

    @property
    def last_modified(self) -> datetime | None:
        return parsedate_to_datetime(self.http_last_modified) if self.http_last_modified else None

    def not_modified(self, if_none_match: str | None, if_modified_since: str | None) -> bool:
        """Whether a GET with these conditional headers gets 304 (RFC 9110 13.1)."""
        if if_none_match is not None:
            return etag_matches(self.etag, if_none_match)
        last_modified = self.last_modified
        if if_modified_since is None or last_modified is None:
            return False
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False
        return since.tzinfo is not None and last_modified <= since


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


def _ignore(outcome: str) -> None:
    return None


Announce = Callable[[str], Awaitable[object]]


#: The broadcast channel on which instances tell each other to drop local copies.
INVALIDATION_CHANNEL: Final = "cache.products"


class CatalogueCache:
    """The catalogue's read cache: up to two layers over the database.

    ``local`` is this process's own memory (the platform's memory cache, or a small
    front layer before Redis); ``shared`` is Redis, seen by every instance. A read tries
    them in that order and fills them on its way back. A write invalidates both, then
    broadcasts the product ids so that every other instance drops its ``local`` copies
    (see :meth:`on_remote_invalidation`). Built in ``create_app`` (no I/O) and bound in the
    lifespan. With ``enabled=False`` every read goes to the database (the benchmark's cold
    runs). A cache outage degrades reads to the database rather than failing them.
    """

    def __init__(
        self, *, enabled: bool = True, ttl: float | None = None, local_ttl: float | None = None
    ) -> None:
        self.enabled = enabled
        self.ttl = ttl
        self.local_ttl = local_ttl if local_ttl is not None else ttl
        self.instance = uuid.uuid4().hex
        self._local: Cache | None = None
        self._shared: Cache | None = None
        self._announce: Announce | None = None
        self._generation = 0
        self._flights: dict[tuple[str, int], asyncio.Task[Representation]] = {}
        #: Called with the outcome of every read: "local", "shared" (hits), "miss",
        #: "bypass" (cache off or down); the app counts them in its metrics.
        self.on_read: Callable[[str], None] = _ignore

    def bind(
        self,
        local: Cache | None,
        shared: Cache | None = None,
        announce: Announce | None = None,
    ) -> None:
        """Use these layers; ``announce(payload)`` broadcasts an invalidation."""
        self._local, self._shared, self._announce = local, shared, announce

    async def product(self, product_id: str, load: Loader) -> Representation:
        return await self._read(product_key(product_id), load, tags=())

    async def product_list(self, params: Mapping[str, object], load: Loader) -> Representation:
        return await self._read(list_key(params), load, tags=(LISTS_TAG,))

    async def invalidate(self, product_ids: Iterable[str] = ()) -> None:
        """Forget the given products and every list (a list may show any product), here,
        in the shared layer, and (by broadcast) in every other instance's local layer."""
        ids = list(product_ids)
        self._generation += 1
        for layer in self._layers():
            try:
                await self._forget(layer, ids)
            except _CACHE_OUTAGES as exc:
                # The change is committed: failing now would only make the client retry a
                # write that happened. While the cache is down reads bypass it; its stale
                # entries can outlive the outage by at most the cache TTL.
                log.error("cache invalidation failed", error=repr(exc), products=ids)
        if self._announce is not None:
            await self._announce(json.dumps({"from": self.instance, "ids": ids}))

    async def ensure_writable(self) -> None:
        """Refuse a write (503, nothing changed) when its invalidation could not happen."""
        if not self.enabled or self._shared is None:
            return
        try:
            await self._shared.ping()
        except _CACHE_OUTAGES:
            raise ServiceUnavailable(
                "The catalogue cache is unavailable; nothing was changed.", dependency="cache"
            ) from None

    async def on_remote_invalidation(self, payload: str) -> None:
        """Another instance wrote: drop the local copies it names (the broadcast listener)."""
        try:
            message = json.loads(payload)
            sender, ids = str(message["from"]), [str(i) for i in message["ids"]]
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed cache invalidation")
            return
        if sender == self.instance:
            return  # our own write: already done
        self._generation += 1
        if self._local is not None:
            await self._forget(self._local, ids)

    @staticmethod
    async def _forget(layer: Cache, product_ids: list[str]) -> None:
        if product_ids:
            await layer.delete(*map(product_key, product_ids))
        await layer.invalidate_tags(LISTS_TAG)

    def _layers(self) -> list[Cache]:
        return [layer for layer in (self._local, self._shared) if layer is not None]

    async def _read(self, key: str, load: Loader, *, tags: Iterable[str]) -> Representation:
        layers = self._layers()
        if not self.enabled or not layers:
            self.on_read("bypass")
            return await load()
        for depth, layer in enumerate(layers):
            try:
                hit = await layer.get(key)
            except _CACHE_OUTAGES as exc:
                log.warning("cache unavailable; reading from the database", error=repr(exc))
                self.on_read("bypass")
                return await load()
            if hit is not None:
                self.on_read("local" if layer is self._local else "shared")
                if depth:  # found in the shared layer: keep a local copy too
                    generation = self._generation
                    await self._store(layers[:depth], key, hit, list(tags), generation)
                return Representation.decode(hit)
        self.on_read("miss")
        flight = (key, self._generation)
        task = self._flights.get(flight)
        if task is None:
            task = asyncio.create_task(self._load_and_store(layers, key, load, list(tags)))
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
        self, layers: list[Cache], key: str, load: Loader, tags: list[str]
    ) -> Representation:
        generation = self._generation
        representation = await load()
        await self._store(list(reversed(layers)), key, representation.encode(), tags, generation)
        return representation

    async def _store(
        self, layers: list[Cache], key: str, data: bytes, tags: list[str], generation: int
    ) -> None:
        """Keep ``data`` unless an invalidation happened since ``generation`` was read."""
        for layer in layers:
            if self._generation != generation:
                return  # a write committed meanwhile: serve the value, do not keep it
            ttl = self.local_ttl if layer is self._local and self._shared else self.ttl
            try:
                await layer.set(key, data, ttl=ttl, tags=tags)
                if self._generation != generation:
                    # The invalidation raced the store (another connection): drop it again.
                    await layer.delete(key)
            except _CACHE_OUTAGES as exc:
                log.warning("cache unavailable; result not cached", error=repr(exc))
