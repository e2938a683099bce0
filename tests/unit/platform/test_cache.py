"""The cache contract, run here on the memory backend with a fake clock (no I/O).

:class:`CacheContract` holds the behaviour every backend promises; the Redis integration
tests run the same class against a real server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest

from mercato.platform.cache import Cache, MemoryCache, RedisCache, cached, create_cache

pytestmark = pytest.mark.anyio

MakeCache = Callable[..., Cache]
LetTimePass = Callable[[float], Awaitable[None]]


async def never_called() -> bytes:
    raise AssertionError("the loader must not run")


class LoadFailed(Exception):
    pass


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

    async def test_delete_prefix_removes_only_keys_starting_with_it(self, cache: Cache) -> None:
        for key in ("user:1", "user:2", "users", "product:1", "cart:user:1"):
            await cache.set(key, b"v")
        assert await cache.delete_prefix("user:") == 2
        assert await cache.get("user:1") is None
        assert await cache.get("user:2") is None
        for key in ("users", "product:1", "cart:user:1"):
            assert await cache.get(key) == b"v"

    async def test_delete_prefix_takes_glob_characters_literally(self, cache: Cache) -> None:
        for key in ("a*b", "axb", "a?", "ab", "a[b]", "ab]", "a\\b", "a\\\\b"):
            await cache.set(key, b"v")
        assert await cache.delete_prefix("a*") == 1
        assert await cache.delete_prefix("a?") == 1
        assert await cache.delete_prefix("a[b") == 1
        assert await cache.delete_prefix("a\\b") == 1
        for key in ("axb", "ab", "ab]", "a\\\\b"):
            assert await cache.get(key) == b"v"

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
        assert await other.delete_prefix("") == 1
        assert await other.invalidate_tags("t") == 0
        assert await cache.get("k") == b"mine"
        await other.set("k", b"theirs", tags=["t"])
        assert await cache.invalidate_tags("t") == 1
        assert await other.get("k") == b"theirs"

    async def test_get_or_load_returns_a_cached_value_without_loading(self, cache: Cache) -> None:
        await cache.set("k", b"cached")
        assert await cache.get_or_load("k", never_called) == b"cached"

    async def test_get_or_load_stores_the_loaded_value_with_its_tags(self, cache: Cache) -> None:
        async def load() -> bytes:
            return b"loaded"

        assert await cache.get_or_load("k", load, ttl=60, tags=["t"]) == b"loaded"
        assert await cache.get_or_load("k", never_called) == b"loaded"
        assert await cache.invalidate_tags("t") == 1

    async def test_concurrent_misses_call_the_loader_once(self, cache: Cache) -> None:
        calls = 0

        async def load() -> bytes:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.05)
            return b"loaded"

        results = await asyncio.gather(*(cache.get_or_load("cold", load) for _ in range(50)))
        assert calls == 1
        assert results == [b"loaded"] * 50
        assert await cache.get("cold") == b"loaded"

    async def test_a_failed_load_reaches_every_waiter_and_is_retried(self, cache: Cache) -> None:
        calls = 0

        async def fail() -> bytes:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.05)
            raise LoadFailed

        async def load() -> bytes:
            return b"loaded"

        results = await asyncio.gather(
            *(cache.get_or_load("cold", fail) for _ in range(50)), return_exceptions=True
        )
        assert calls == 1
        assert all(isinstance(result, LoadFailed) for result in results)
        assert await cache.get("cold") is None
        assert await cache.get_or_load("cold", load) == b"loaded"

    async def test_cached_caches_results_per_key(self, cache: Cache) -> None:
        calls: list[tuple[int, str]] = []

        @cached(cache, key=lambda product_id, currency="EUR": f"price:{product_id}:{currency}")
        async def price(product_id: int, currency: str = "EUR") -> dict[str, Any]:
            calls.append((product_id, currency))
            return {"id": product_id, "amount": "9.99", "currency": currency}

        assert await price(1) == {"id": 1, "amount": "9.99", "currency": "EUR"}
        assert await price(1) == {"id": 1, "amount": "9.99", "currency": "EUR"}
        assert await price(2) == {"id": 2, "amount": "9.99", "currency": "EUR"}
        assert await price(1, currency="USD") == {"id": 1, "amount": "9.99", "currency": "USD"}
        assert calls == [(1, "EUR"), (2, "EUR"), (1, "USD")]
        stored = await cache.get("price:1:EUR")
        assert stored is not None
        assert json.loads(stored) == {"id": 1, "amount": "9.99", "currency": "EUR"}

    async def test_ping_answers(self, cache: Cache) -> None:
        await cache.ping()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


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


async def test_on_result_reports_each_lookup_as_hit_or_miss() -> None:
    results: list[tuple[str, bool]] = []
    cache = MemoryCache("products", on_result=lambda key, hit: results.append((key, hit)))

    async def load() -> bytes:
        return b"loaded"

    await cache.get("k")
    await cache.set("k", b"v")
    await cache.get("k")
    await cache.get_or_load("cold", load)
    await cache.get_or_load("cold", load)
    assert results == [("k", False), ("k", True), ("cold", False), ("cold", True)]


async def test_a_cancelled_caller_does_not_cancel_the_shared_load() -> None:
    cache = MemoryCache("products")
    release = asyncio.Event()

    async def load() -> bytes:
        await release.wait()
        return b"loaded"

    first = asyncio.create_task(cache.get_or_load("k", load))
    second = asyncio.create_task(cache.get_or_load("k", never_called))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert await second == b"loaded"
    assert first.cancelled()


async def test_cached_finds_the_cache_at_call_time() -> None:
    app: dict[str, Cache] = {}

    @cached(lambda: app["cache"], key=lambda name: f"greeting:{name}")
    async def greeting(name: str) -> str:
        return f"hello {name}"

    app["cache"] = MemoryCache("products")
    assert await greeting("ada") == "hello ada"
    assert await app["cache"].get("greeting:ada") == b'"hello ada"'


async def test_cached_tags_entries_from_the_arguments() -> None:
    cache = MemoryCache("products")
    calls = 0

    @cached(cache, key=lambda pid: f"product:{pid}", tags=lambda pid: [f"product:{pid}"])
    async def product(pid: int) -> list[int]:
        nonlocal calls
        calls += 1
        return [pid, calls]

    assert await product(7) == [7, 1]
    assert await product(7) == [7, 1]
    assert await cache.invalidate_tags("product:7") == 1
    assert await product(7) == [7, 2]


async def test_cached_uses_a_custom_codec() -> None:
    cache = MemoryCache("products")

    @cached(
        cache,
        key=lambda: "total",
        encode=lambda value: str(value).encode(),
        decode=lambda data: Decimal(data.decode()),
    )
    async def total() -> Decimal:
        return Decimal("10.50")

    assert await total() == Decimal("10.50")
    assert await total() == Decimal("10.50")
    assert await cache.get("total") == b"10.50"


async def test_cached_refuses_values_json_cannot_round_trip() -> None:
    cache = MemoryCache("products")

    @cached(cache, key=lambda: "total")
    async def total() -> Decimal:
        return Decimal("10.50")

    with pytest.raises(TypeError):
        await total()
    assert await cache.get("total") is None


def test_cached_refuses_a_plain_function() -> None:
    def plain() -> int:
        return 1

    with pytest.raises(TypeError):
        cached(MemoryCache("products"), key=lambda: "k")(plain)  # type: ignore[arg-type]


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
