"""Cache-aside for catalogue reads (on the memory backend) and the HTTP validators."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from mercato.platform.cache import MemoryCache
from mercato.platform.errors import ServiceUnavailable
from mercato.products.caching import CatalogueCache, Representation, etag_matches, list_key

pytestmark = pytest.mark.anyio

MODIFIED = datetime(2026, 11, 30, 10, 0, 0, 123456, tzinfo=UTC)


class CountingLoader:
    """A loader that counts its calls and can be held until released."""

    def __init__(self, body: bytes = b'{"v":1}') -> None:
        self.body = body
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def __call__(self) -> Representation:
        self.calls += 1
        body = self.body  # what the database held when the load began
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        return Representation.of(body, MODIFIED)


@pytest.fixture
def catalogue() -> CatalogueCache:
    catalogue = CatalogueCache(enabled=True, ttl=60)
    catalogue.bind(MemoryCache("products"))
    return catalogue


def test_representation_round_trips_through_the_cache_encoding() -> None:
    representation = Representation.of(b'{"a":"x\\ny"}\n', MODIFIED)
    assert Representation.decode(representation.encode()) == representation
    assert representation.last_modified == MODIFIED.replace(microsecond=0)
    assert representation.http_last_modified == "Mon, 30 Nov 2026 10:00:00 GMT"


def test_the_etag_is_strong_and_follows_every_byte() -> None:
    one, other = Representation.of(b'{"price":"1.00"}'), Representation.of(b'{"price":"1.01"}')
    assert one.etag.startswith('"')
    assert one.etag.endswith('"')
    assert one.etag != other.etag
    assert Representation.of(b'{"price":"1.00"}').etag == one.etag


@pytest.mark.parametrize(
    ("header", "matches"),
    [('"abc"', True), ('W/"abc"', True), ('"x", "abc"', True), ("*", True), ('"abd"', False)],
)
def test_if_none_match_uses_weak_comparison(header: str, matches: bool) -> None:
    assert etag_matches('"abc"', header) is matches


def test_if_modified_since_is_used_only_without_if_none_match() -> None:
    representation = Representation.of(b"{}", MODIFIED)
    same = "Mon, 30 Nov 2026 10:00:00 GMT"
    earlier = "Mon, 30 Nov 2026 09:59:59 GMT"
    assert representation.not_modified(None, same)
    assert not representation.not_modified(None, earlier)
    assert not representation.not_modified('"other"', same)
    assert not representation.not_modified(None, "not a date")
    assert not representation.not_modified(None, None)


def test_list_keys_depend_on_every_parameter_but_not_their_order() -> None:
    assert list_key({"a": 1, "b": None}) == list_key({"b": None, "a": 1})
    assert list_key({"a": 1, "b": None}) != list_key({"a": 1, "b": "x"})


async def test_a_hit_after_a_miss_does_not_load_again(catalogue: CatalogueCache) -> None:
    load = CountingLoader()
    first = await catalogue.product("p1", load)
    second = await catalogue.product("p1", load)
    assert load.calls == 1
    assert second == first


async def test_concurrent_misses_share_one_load(catalogue: CatalogueCache) -> None:
    load = CountingLoader()
    load.gate = asyncio.Event()
    readers = [asyncio.create_task(catalogue.product("p1", load)) for _ in range(25)]
    await load.started.wait()
    load.gate.set()
    results = await asyncio.gather(*readers)
    assert load.calls == 1
    assert len({result.etag for result in results}) == 1


async def test_a_reader_that_gives_up_does_not_cancel_the_shared_load(
    catalogue: CatalogueCache,
) -> None:
    load = CountingLoader()
    load.gate = asyncio.Event()
    leaving = asyncio.create_task(catalogue.product("p1", load))
    staying = asyncio.create_task(catalogue.product("p1", load))
    await load.started.wait()
    leaving.cancel()  # a client disconnects while the load it started runs
    await asyncio.gather(leaving, return_exceptions=True)
    load.gate.set()
    assert (await staying).body == load.body
    assert leaving.cancelled()
    assert load.calls == 1
    assert (await catalogue.product("p1", CountingLoader(b"unused"))).body == load.body


async def test_a_write_invalidates_the_product_and_every_list(catalogue: CatalogueCache) -> None:
    product, listing, other = CountingLoader(), CountingLoader(), CountingLoader()
    await catalogue.product("p1", product)
    await catalogue.product_list({"page": 1}, listing)
    await catalogue.product("p2", other)
    await catalogue.invalidate(["p1"])
    await catalogue.product("p1", product)
    await catalogue.product_list({"page": 1}, listing)
    await catalogue.product("p2", other)
    assert (product.calls, listing.calls, other.calls) == (2, 2, 1)


async def test_a_load_that_began_before_a_write_is_not_kept(catalogue: CatalogueCache) -> None:
    """The stale-read race of cache-aside: the old value must not outlive the write."""
    stale = CountingLoader(b'{"v":"old"}')
    stale.gate = asyncio.Event()
    reader = asyncio.create_task(catalogue.product("p1", stale))
    await stale.started.wait()
    # The write commits and invalidates while the read is still loading the old row.
    await catalogue.invalidate(["p1"])
    fresh = CountingLoader(b'{"v":"new"}')
    fresh.gate = asyncio.Event()
    after_write = asyncio.create_task(catalogue.product("p1", fresh))
    await fresh.started.wait()  # it did not join the stale load
    stale.gate.set()
    assert (await reader).body == b'{"v":"old"}'
    fresh.gate.set()
    assert (await after_write).body == b'{"v":"new"}'
    again = CountingLoader(b'{"v":"newest"}')
    assert (await catalogue.product("p1", again)).body == b'{"v":"new"}'
    assert again.calls == 0


async def test_a_failed_load_is_not_cached_and_reaches_every_waiter(
    catalogue: CatalogueCache,
) -> None:
    gate = asyncio.Event()
    calls = 0

    async def failing() -> Representation:
        nonlocal calls
        calls += 1
        await gate.wait()
        raise LookupError("gone")

    readers = [asyncio.create_task(catalogue.product("p1", failing)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*readers, return_exceptions=True)
    assert calls == 1
    assert all(isinstance(result, LookupError) for result in results)
    load = CountingLoader()
    await catalogue.product("p1", load)
    assert load.calls == 1


async def test_a_disabled_cache_always_reads_the_database() -> None:
    catalogue = CatalogueCache(enabled=False)
    catalogue.bind(MemoryCache("products"))
    load = CountingLoader()
    await catalogue.product("p1", load)
    await catalogue.product("p1", load)
    assert load.calls == 2


class BrokenCache(MemoryCache):
    async def _get(self, key: str) -> bytes | None:
        raise ConnectionError("cache down")

    async def set(
        self, key: str, value: bytes, *, ttl: float | None = None, tags: Iterable[str] = ()
    ) -> None:
        raise ConnectionError("cache down")


async def test_a_cache_outage_degrades_reads_to_the_database() -> None:
    catalogue = CatalogueCache(enabled=True)
    catalogue.bind(BrokenCache("products"))
    load = CountingLoader()
    assert (await catalogue.product("p1", load)).body == load.body
    assert (await catalogue.product("p1", load)).body == load.body
    assert load.calls == 2


class Instance:
    """One service instance: its own local layer before a shared one."""

    def __init__(self, shared: MemoryCache, peers: list[Instance]) -> None:
        self.catalogue = CatalogueCache(enabled=True, ttl=60, local_ttl=5)
        self.local = MemoryCache("products")
        self.peers = peers
        self.heard = 0
        peers.append(self)

        async def announce(payload: str) -> int:
            for peer in self.peers:  # a broadcast reaches every instance, the sender too
                peer.heard += 1
                await peer.catalogue.on_remote_invalidation(payload)
            return len(self.peers)

        self.catalogue.bind(self.local, shared, announce)


async def test_a_write_drops_the_local_copies_of_every_instance() -> None:
    shared = MemoryCache("products")
    peers: list[Instance] = []
    one, two = Instance(shared, peers), Instance(shared, peers)
    old = CountingLoader(b'{"v":"old"}')
    await one.catalogue.product("p1", old)
    await two.catalogue.product("p1", old)  # from the shared layer, kept locally too
    assert old.calls == 1
    assert await two.local.get("product:p1") is not None

    await one.catalogue.invalidate(["p1"])  # a write through instance one
    assert (one.heard, two.heard) == (1, 1)
    assert await two.local.get("product:p1") is None
    new = CountingLoader(b'{"v":"new"}')
    assert (await two.catalogue.product("p1", new)).body == b'{"v":"new"}'
    assert (await one.catalogue.product("p1", new)).body == b'{"v":"new"}'
    assert new.calls == 1


async def test_malformed_invalidations_are_ignored(catalogue: CatalogueCache) -> None:
    load = CountingLoader()
    await catalogue.product("p1", load)
    for payload in ("not json", "{}", '{"from": "x", "ids": 5}', "[]"):
        await catalogue.on_remote_invalidation(payload)
    await catalogue.product("p1", load)
    assert load.calls == 1


class DownCache(BrokenCache):
    async def delete(self, *keys: str) -> None:
        raise ConnectionError("cache down")

    async def invalidate_tags(self, *tags: str) -> int:
        raise ConnectionError("cache down")

    async def ping(self) -> None:
        raise ConnectionError("cache down")


async def test_writes_are_refused_before_they_start_when_the_shared_cache_is_down() -> None:
    catalogue = CatalogueCache(enabled=True)
    catalogue.bind(None, DownCache("products"))
    with pytest.raises(ServiceUnavailable):
        await catalogue.ensure_writable()
    with capture_logs() as logs:
        await catalogue.invalidate(["p1"])  # after a commit: logged, never raised
    assert [entry["event"] for entry in logs] == ["cache invalidation failed"]
