"""The cache contract, run here on the memory backend with a fake clock (no I/O).

:class:`CacheContract` holds the behaviour every backend promises; the Redis integration
tests run the same class against a real server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from mercato.platform.cache import Cache, MemoryCache, RedisCache, create_cache
from support.clock import FakeClock

pytestmark = pytest.mark.anyio

MakeCache = Callable[..., Cache]
LetTimePass = Callable[[float], Awaitable[None]]


class CacheContract:
    """What every backend promises. A subclass provides the fixtures ``namespace``,
    ``make_cache(namespace, *, default_ttl=None)`` and ``let_time_pass(seconds)``."""

    @pytest.fixture
    def cache(self, make_cache: MakeCache, namespace: str) -> Cache:
        return make_cache(namespace)

    async def test_get_returns_the_last_value_set(self, cache: Cache) -> None:
        assert await cache.get("k") is None
        await cache.set("k", b"first")
        assert await cache.get("k") == b"first"
        await cache.set("k", b"second")
        assert await cache.get("k") == b"second"

    async def test_entry_expires_after_its_ttl(
        self, cache: Cache, let_time_pass: LetTimePass
    ) -> None:
        await cache.set("short", b"v", ttl=0.15)
        await cache.set("renewed", b"v", ttl=0.15)
        await cache.set("renewed", b"v")
        await cache.set("lasting", b"v", ttl=60)
        assert await cache.get("short") == b"v"
        await let_time_pass(0.2)
        assert await cache.get("short") is None
        assert await cache.get("renewed") == b"v"
        assert await cache.get("lasting") == b"v"

    async def test_default_ttl_applies_when_set_names_none(
        self, make_cache: MakeCache, namespace: str, let_time_pass: LetTimePass
    ) -> None:
        cache = make_cache(namespace, default_ttl=0.15)
        await cache.set("default", b"v")
        await cache.set("explicit", b"v", ttl=60)
        await let_time_pass(0.2)
        assert await cache.get("default") is None
        assert await cache.get("explicit") == b"v"

    async def test_delete_removes_only_the_given_keys(self, cache: Cache) -> None:
        for key in ("a", "b", "c"):
            await cache.set(key, b"v")
        await cache.delete("a", "b", "missing")
        await cache.delete()
        assert [await cache.get(key) for key in ("a", "b", "c")] == [None, None, b"v"]

    async def test_invalidate_tags_removes_entries_set_with_any_of_them(self, cache: Cache) -> None:
        await cache.set("p1", b"v", tags=["product:1", "catalog"])
        await cache.set("p2", b"v", tags=["product:2", "catalog"])
        await cache.set("untagged", b"v")
        assert await cache.invalidate_tags("product:1") == 1
        assert await cache.get("p1") is None
        assert await cache.get("p2") == b"v"
        assert await cache.invalidate_tags("catalog", "unknown") == 1
        assert await cache.get("p2") is None
        assert await cache.get("untagged") == b"v"
        assert await cache.invalidate_tags("catalog") == 0

    async def test_tags_of_the_latest_set_apply(self, cache: Cache) -> None:
        await cache.set("k", b"old", tags=["old"])
        await cache.set("k", b"new", tags=["new"])
        assert await cache.invalidate_tags("new") == 1
        assert await cache.get("k") is None

    async def test_namespaces_isolate_caches(
        self, cache: Cache, make_cache: MakeCache, namespace: str
    ) -> None:
        other = make_cache(f"{namespace}-other")
        await cache.set("k", b"mine", tags=["t"])
        await other.set("k", b"theirs", tags=["t"])
        assert await cache.get("k") == b"mine"
        assert await other.get("k") == b"theirs"
        await other.delete("k")
        assert await other.invalidate_tags("t") == 0
        assert await cache.get("k") == b"mine"
        await other.set("k", b"theirs", tags=["t"])
        assert await cache.invalidate_tags("t") == 1
        assert await other.get("k") == b"theirs"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class TestMemoryCache(CacheContract):
    @pytest.fixture
    def namespace(self) -> str:
        return "products"

    @pytest.fixture
    def make_cache(self, clock: FakeClock) -> MakeCache:
        def make(namespace: str, *, default_ttl: float | None = None) -> Cache:
            return MemoryCache(namespace, default_ttl=default_ttl, clock=clock)

        return make

    @pytest.fixture
    def let_time_pass(self, clock: FakeClock) -> LetTimePass:
        async def advance(seconds: float) -> None:
            clock.now += seconds

        return advance


async def test_full_cache_evicts_the_least_recently_used_entry(clock: FakeClock) -> None:
    cache = MemoryCache("products", max_entries=3, clock=clock)
    for key in ("a", "b", "c"):
        await cache.set(key, key.encode(), tags=["t"])
    assert await cache.get("a") == b"a"
    await cache.set("d", b"d", tags=["t"])
    assert await cache.get("b") is None
    assert [await cache.get(key) for key in ("a", "c", "d")] == [b"a", b"c", b"d"]
    assert await cache.invalidate_tags("t") == 3


async def test_expired_entries_are_not_counted_as_removed(clock: FakeClock) -> None:
    cache = MemoryCache("products", clock=clock)
    await cache.set("gone", b"v", ttl=1, tags=["t"])
    await cache.set("live", b"v", tags=["t"])
    clock.now += 2
    assert await cache.invalidate_tags("t") == 1


@pytest.mark.parametrize("namespace", ["", "a:b", "a#b", "a*", "-a"])
def test_namespace_must_be_a_plain_word(namespace: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        MemoryCache(namespace)


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf")])
async def test_ttl_must_be_positive_and_finite(ttl: float) -> None:
    cache = MemoryCache("products")
    with pytest.raises(ValueError, match="ttl"):
        await cache.set("k", b"v", ttl=ttl)
    with pytest.raises(ValueError, match="ttl"):
        MemoryCache("products", default_ttl=ttl)


async def test_tags_must_not_be_a_single_string() -> None:
    with pytest.raises(TypeError, match="tags"):
        await MemoryCache("products").set("k", b"v", tags="catalog")


@pytest.mark.parametrize("redis_url", [None, ""])
def test_create_cache_without_redis_url_keeps_entries_in_memory(redis_url: str | None) -> None:
    cache = create_cache(redis_url=redis_url, namespace="products", max_entries=5)
    assert isinstance(cache, MemoryCache)
    assert cache.max_entries == 5


async def test_create_cache_with_redis_url_connects_lazily() -> None:
    # Nothing listens on port 1: connecting here would raise.
    cache = create_cache(redis_url="redis://127.0.0.1:1/0", namespace="products", default_ttl=5)
    assert isinstance(cache, RedisCache)
    assert cache.default_ttl == 5
    await cache.close()
