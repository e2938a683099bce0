"""One warm cache read from Redis (``RedisCache.get`` of a 1 KB entry), as the products
read path does it: the redis-py client, its pool and its reply parser (hiredis when
installed), without the app around it.

    PYTHONPATH=tests:. .venv/bin/python -m bench.profile.redis_get -n 2000 --cprofile
    bench/profile/instructions.sh redis_get 2000
"""

from __future__ import annotations

import asyncio
import uuid

from bench.profile._driver import arguments, measure_calls
from mercato.platform.cache import RedisCache
from support.servers import TEST_REDIS_URL


async def main() -> None:
    options = arguments(__doc__ or "")
    cache = RedisCache.from_url(TEST_REDIS_URL, f"profile-{uuid.uuid4().hex[:8]}")
    try:
        await cache.set("product:1", b"x" * 1024, ttl=60)

        async def read() -> None:
            if await cache.get("product:1") is None:
                raise SystemExit("the entry is gone")

        await measure_calls(read, options)
    finally:
        await cache.delete("product:1")
        await cache.close()


if __name__ == "__main__":
    asyncio.run(main())
