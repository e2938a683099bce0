"""Checks shared by the rate limiter's tests on memory and on Redis."""

from __future__ import annotations

from mercato.platform.security.ratelimit import RateLimiter, parse_limit


async def assert_fixed_window_matches_limits(limiter: RateLimiter, *, slack: float = 1) -> str:
    """Five hits of ``3/minute`` through ``limiter.hit`` (key ``api``/``alice``) answer what
    limits' own strategy answers on the same storage (key ``api``/``bob``): the same
    verdicts, counts and reset (within ``slack`` seconds). Returns alice's storage key."""
    item = parse_limit("3/minute")
    for _ in range(5):
        ours = await limiter.hit(item, "api", "alice", name="api")
        allowed = await limiter.strategy.hit(item, "api", "bob")
        stats = await limiter.strategy.get_window_stats(item, "api", "bob")
        assert (ours.allowed, ours.remaining) == (allowed, stats.remaining)
        assert abs(ours.reset - stats.reset_time) < slack
    return item.key_for("api", "alice")
