"""One gateway rate-limit hit (``RateLimiter.hit``, fixed window, as the gateway runs it on
every proxied request) on Redis (the default) or in memory (``--memory``).

    PYTHONPATH=tests:. .venv/bin/python -m bench.profile.ratelimit_hit -n 2000 --cprofile
    bench/profile/instructions.sh ratelimit_hit 1000
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from bench.profile._driver import arguments, measure_calls
from mercato.platform.security.ratelimit import RateLimiter
from support.servers import TEST_REDIS_URL


async def main() -> None:
    memory = "--memory" in sys.argv
    if memory:
        sys.argv.remove("--memory")
    options = arguments(__doc__ or "")
    limiter = RateLimiter(
        None if memory else TEST_REDIS_URL,
        prefix=f"profile-{uuid.uuid4().hex[:8]}",
        strategy="fixed-window",
    )
    try:

        async def hit() -> None:
            if not (
                await limiter.hit("1000000/minute", "gateway", "user", "alice", name="user")
            ).allowed:
                raise SystemExit("refused")

        await measure_calls(hit, options)
    finally:
        await limiter.close()


if __name__ == "__main__":
    asyncio.run(main())
