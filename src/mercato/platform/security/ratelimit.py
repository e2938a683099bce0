"""Rate limits on the ``limits`` library, shared by every instance when Redis is configured.

``await limiter.hit("5/minute", "login", username, address, name="login")`` consumes one unit
and answers a :class:`RateLimitResult` that carries everything a 429 needs (``Retry-After``
and the ``RateLimit-*`` headers). When the storage is down, ``fail_closed=True`` refuses (the
result says ``unavailable``, callers answer 503) instead of letting every request through.
Every refusal is reported to ``on_refused`` with the limit's ``name`` (a metric's label).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, Literal

import structlog
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.aio.strategies import RateLimiter as LimitsStrategy
from limits.errors import StorageError
from redis.exceptions import RedisError

from mercato.platform.errors import AppError, ServiceUnavailable

log = structlog.stdlib.get_logger("mercato.security")

Strategy = Literal["fixed-window", "moving-window", "sliding-window-counter"]
_STRATEGIES: Final[dict[Strategy, type[LimitsStrategy]]] = {
    "fixed-window": FixedWindowRateLimiter,
    "moving-window": MovingWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
}
#: Seconds a client is told to wait when the limit storage is down.
UNAVAILABLE_RETRY_AFTER: Final = 5
#: A fixed-window hit on Redis in one round trip: limits' own increment (its
#: ``incr_expire.lua``: ``INCRBY``, and ``EXPIRE`` when this hit created the key) and the
#: key's ``TTL`` for the window's reset, answered together.
INCR_EXPIRE_TTL: Final = b"""
local amount = tonumber(ARGV[2])
local current = redis.call("incrby", KEYS[1], amount)
if tonumber(current) == amount then
    redis.call("expire", KEYS[1], ARGV[1])
end
return {current, redis.call("ttl", KEYS[1])}
"""


class TooManyRequests(AppError):
    status, title, slug = 429, "Too Many Requests", "rate-limited"


@lru_cache(maxsize=256)
def parse_limit(limit: str) -> RateLimitItem:
    """``"5/minute"`` as a limits item (the first, when several are given)."""
    return parse_many(limit)[0]


@dataclass(frozen=True, slots=True)
class RateLimitResult:
    allowed: bool
    limit: int
    remaining: int
    reset: float  # epoch seconds when the window frees up
    unavailable: bool = False  # the storage did not answer

    @property
    def retry_after(self) -> int:
        if self.unavailable:
            return UNAVAILABLE_RETRY_AFTER
        return max(1, math.ceil(self.reset - time.time()))

    def headers(self) -> dict[str, str]:
        """``RateLimit-*`` headers, and ``Retry-After`` on a refusal."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(max(0, self.remaining)),
            "RateLimit-Reset": str(max(0, math.ceil(self.reset - time.time()))),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """:meth:`headers` as raw ASGI pairs (names lowercased), as a proxy adds them to
        an answer on every request."""
        return [(name.lower().encode(), value.encode()) for name, value in self.headers().items()]

    def raise_for_refusal(self, detail: str = "Too many requests; try again later.") -> None:
        """Raise 429 (limit reached) or 503 (storage down, failing closed) when refused."""
        if self.allowed:
            return
        headers = self.headers()
        if self.unavailable:
            raise _Unavailable("Rate limiting is unavailable; try again shortly.", headers)
        raise _Refused(detail, headers)


class _Refused(TooManyRequests):
    def __init__(self, detail: str, headers: dict[str, str]) -> None:
        super().__init__(detail)
        self.headers = headers  # type: ignore[misc]


class _Unavailable(ServiceUnavailable):
    def __init__(self, detail: str, headers: dict[str, str]) -> None:
        super().__init__(detail, dependency="cache")
        self.headers = headers  # type: ignore[misc]


def _storage(redis_url: str | None, prefix: str, timeout: float) -> Storage:
    if not redis_url:
        return MemoryStorage()
    url = redis_url if redis_url.startswith("async+") else f"async+{redis_url}"
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    return RedisStorage(
        url, wrap_exceptions=True, implementation="redispy", key_prefix=prefix, **options
    )


class _MemoryWindows:
    """Fixed windows in process memory: per key the count and the instant its window
    ends, as limits' ``MemoryStorage`` keeps them for this strategy (a key's window starts
    with its first hit and lasts the limit's expiry). Without what that storage adds to
    every increment: an ``asyncio.Lock`` per key, and a new task sweeping every key (its
    cost grows with the number of clients); here the expired keys are dropped at most once
    a second, during a hit."""

    __slots__ = ("_next_sweep", "_windows")

    def __init__(self) -> None:
        self._windows: dict[str, list[float]] = {}  # key -> [count, ends at (epoch s)]
        self._next_sweep = 0.0

    def incr(self, key: str, expiry: int, amount: int) -> tuple[int, float]:
        """Count ``amount`` hits on ``key``: the window's count after them, and its end."""
        now = time.time()
        if now >= self._next_sweep:
            self._windows = {k: w for k, w in self._windows.items() if w[1] > now}
            self._next_sweep = now + 1.0
        window = self._windows.get(key)
        if window is None or window[1] <= now:
            window = self._windows[key] = [0, now + expiry]
        window[0] += amount
        return int(window[0]), window[1]

    def clear(self, key: str) -> None:
        self._windows.pop(key, None)


class RateLimiter:
    """Counts hits per key in memory or in Redis (``redis_url``)."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        prefix: str = "mercato-ratelimit",
        strategy: Strategy = "moving-window",
        fail_closed: bool = True,
        timeout: float = 1.0,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        self.storage = _storage(redis_url, prefix, timeout)
        self.on_refused = on_refused
        self.strategy = _STRATEGIES[strategy](self.storage)
        self.fail_closed = fail_closed
        self.shared = bool(redis_url)
        self._bridge: RedispyBridge | None = None
        self._windows: _MemoryWindows | None = None
        if strategy == "fixed-window" and isinstance(self.storage, MemoryStorage):
            self._windows = _MemoryWindows()
        self._incr_expire_ttl: Any = None
        if isinstance(self.storage, RedisStorage) and isinstance(
            self.storage.bridge, RedispyBridge
        ):
            self._bridge = self.storage.bridge
            self._incr_expire_ttl = self._bridge.get_connection().register_script(INCR_EXPIRE_TTL)

    async def hit(
        self, limit: str | RateLimitItem, *key_parts: str, name: str, cost: int = 1
    ) -> RateLimitResult:
        """Consume ``cost`` units of ``limit`` (called ``name``: ``api``, ``login``...) for
        the key made of ``key_parts``; a refusal (not an unavailable storage) is reported to
        ``on_refused``."""
        item = parse_limit(limit) if isinstance(limit, str) else limit
        try:
            if isinstance(self.strategy, FixedWindowRateLimiter):
                allowed, remaining, reset = await self._fixed_window_hit(item, key_parts, cost)
            else:
                allowed = await self.strategy.hit(item, *key_parts, cost=cost)
                stats = await self.strategy.get_window_stats(item, *key_parts)
                remaining, reset = stats.remaining, stats.reset_time
        except (StorageError, RedisError, ConnectionError, TimeoutError, OSError) as exc:
            log.warning(
                "rate limit storage unavailable",
                error=type(exc).__name__,
                outcome="refused" if self.fail_closed else "allowed",
            )
            return RateLimitResult(
                allowed=not self.fail_closed,
                limit=item.amount,
                remaining=0,
                reset=time.time() + UNAVAILABLE_RETRY_AFTER,
                unavailable=True,
            )
        if not allowed and self.on_refused is not None:
            self.on_refused(name)
        return RateLimitResult(allowed=allowed, limit=item.amount, remaining=remaining, reset=reset)

    async def _fixed_window_hit(
        self, item: RateLimitItem, key_parts: tuple[str, ...], cost: int
    ) -> tuple[bool, int, float]:
        """``strategy.hit`` then ``get_window_stats`` of a fixed window, on the same key
        and expiry as limits' own strategy, in fewer storage calls: the count is the one the
        increment answers (limits reads it back with a ``GET``), and on Redis the increment
        and the expiry are one script (:data:`INCR_EXPIRE_TTL`), one round trip instead of
        limits' three. The gateway pays this on every proxied request."""
        key = item.key_for(*key_parts)
        if self._windows is not None:
            count, reset = self._windows.incr(key, item.get_expiry(), cost)
        elif self._bridge is not None:
            count, ttl = await self._incr_expire_ttl(
                keys=[self._bridge.prefixed_key(key)], args=[item.get_expiry(), cost]
            )
            reset = max(int(ttl), 0) + time.time()  # limits' get_expiry, from the same TTL
        else:
            count = await self.storage.incr(key, item.get_expiry(), amount=cost)
            reset = await self.storage.get_expiry(key)
        return count <= item.amount, max(0, item.amount - count), reset

    async def clear(self, limit: str | RateLimitItem, *key_parts: str) -> None:
        item = parse_limit(limit) if isinstance(limit, str) else limit
        if self._windows is not None:
            self._windows.clear(item.key_for(*key_parts))
        await self.strategy.clear(item, *key_parts)

    async def ping(self) -> None:
        """Raise when the storage does not answer (a readiness probe)."""
        try:
            healthy = await self.storage.check()
        except StorageError as exc:
            raise ConnectionError("rate limit storage unavailable") from exc
        if not healthy:
            raise ConnectionError("rate limit storage unavailable")

    async def close(self) -> None:
        if isinstance(self.storage, MemoryStorage):
            timer = self.storage.timer
            if timer is not None and not timer.done():
                timer.cancel()
            return
        if isinstance(self.storage, RedisStorage):
            client = getattr(self.storage.bridge, "storage", None)
            if client is not None:
                await client.aclose()
