"""A Redis failover: the cache answers READONLY to writes while a replica is promoted.
Reads go on from the database, and a write's invalidation does not fail the write."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from redis.exceptions import ReadOnlyError
from structlog.testing import capture_logs

from mercato.platform.cache import MemoryCache
from mercato.products.caching import CatalogueCache, Representation

pytestmark = pytest.mark.anyio


class FailingOverCache(MemoryCache):
    """Reads answer (nothing cached yet); every write is refused by a read-only replica."""

    async def set(
        self, key: str, value: bytes, *, ttl: float | None = None, tags: Iterable[str] = ()
    ) -> None:
        raise ReadOnlyError("You can't write against a read only replica.")

    async def delete(self, *keys: str) -> None:
        raise ReadOnlyError("You can't write against a read only replica.")


async def test_reads_and_invalidations_survive_a_failover() -> None:
    catalogue = CatalogueCache(enabled=True)
    catalogue.bind(None, FailingOverCache("products"))
    loads = 0

    async def load() -> Representation:
        nonlocal loads
        loads += 1
        return Representation.of(b'{"id": "p1"}')

    assert (await catalogue.product("p1", load)).body == b'{"id": "p1"}'
    assert loads == 1
    with capture_logs() as logs:
        await catalogue.invalidate(["p1"])  # logged, not raised: the write has committed
    assert [entry["event"] for entry in logs] == ["cache invalidation failed"]
    assert (await catalogue.product("p1", load)).body == b'{"id": "p1"}'  # read on, uncached
    assert loads == 2
