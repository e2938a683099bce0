"""The rate limiter on memory storage: counting, headers, refusals."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from mercato.platform.errors import ServiceUnavailable
from mercato.platform.security.ratelimit import (
    RateLimiter,
    RateLimitResult,
    Strategy,
    TooManyRequests,
    parse_limit,
)
from support.ratelimits import assert_fixed_window_matches_limits

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("strategy", ["moving-window", "fixed-window", "sliding-window-counter"])
async def test_hits_past_the_limit_are_refused_with_the_headers_of_a_429(
    strategy: Strategy,
) -> None:
    limiter = RateLimiter(strategy=strategy)
    try:
        results = [await limiter.hit("3/minute", "login", "alice", name="login") for _ in range(4)]
    finally:
        await limiter.close()
    assert [r.allowed for r in results] == [True, True, True, False]
    assert [r.remaining for r in results] == [2, 1, 0, 0]
    refused = results[-1]
    headers = refused.headers()
    assert headers["RateLimit-Limit"] == "3"
    assert headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert 0 <= int(headers["RateLimit-Reset"]) <= 60
    with pytest.raises(TooManyRequests) as caught:
        refused.raise_for_refusal()
    assert caught.value.headers["Retry-After"] == headers["Retry-After"]


async def test_a_fixed_window_hit_answers_what_limits_own_strategy_answers() -> None:
    """The fixed window's own memory counter (platform/security/ratelimit.py) against
    limits' hit then get_window_stats on its memory storage: the same verdicts, counts and
    reset."""
    limiter = RateLimiter(strategy="fixed-window")
    try:
        await assert_fixed_window_matches_limits(limiter)
    finally:
        await limiter.close()


async def test_a_fixed_window_starts_again_after_its_expiry_and_expired_keys_are_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1_000_000.0]
    monkeypatch.setattr("mercato.platform.security.ratelimit.time.time", lambda: now[0])
    limiter = RateLimiter(strategy="fixed-window")
    try:
        first = await limiter.hit("2/minute", "api", "alice", name="api")
        await limiter.hit("2/minute", "api", "bob", name="api")
        assert (first.remaining, first.reset) == (1, now[0] + 60)
        now[0] += 30
        assert (await limiter.hit("2/minute", "api", "alice", name="api")).remaining == 0
        assert not (await limiter.hit("2/minute", "api", "alice", name="api")).allowed
        now[0] += 31  # alice's and bob's windows are over
        again = await limiter.hit("2/minute", "api", "alice", name="api")
        assert (again.allowed, again.remaining, again.reset) == (True, 1, now[0] + 60)
        assert limiter._windows is not None
        assert list(limiter._windows._windows) == [parse_limit("2/minute").key_for("api", "alice")]
    finally:
        await limiter.close()


async def test_keys_are_counted_separately() -> None:
    limiter = RateLimiter()
    try:
        await limiter.hit("1/minute", "login", "alice", name="login")
        assert not (await limiter.hit("1/minute", "login", "alice", name="login")).allowed
        assert (await limiter.hit("1/minute", "login", "bob", name="login")).allowed
    finally:
        await limiter.close()


def test_an_allowed_result_raises_nothing_and_has_no_retry_after() -> None:
    result = RateLimitResult(allowed=True, limit=5, remaining=4, reset=0)
    result.raise_for_refusal()
    assert "Retry-After" not in result.headers()


def test_an_unavailable_storage_refusal_is_a_503() -> None:
    result = RateLimitResult(allowed=False, limit=5, remaining=0, reset=0, unavailable=True)
    with pytest.raises(ServiceUnavailable) as caught:
        result.raise_for_refusal()
    assert caught.value.headers["Retry-After"] == "5"


class BrokenStrategy:
    """A limits strategy whose storage is down."""

    async def hit(self, *args: object, **kwargs: object) -> bool:
        from limits.errors import StorageError

        raise StorageError(ConnectionError("redis is down"))


@pytest.mark.parametrize(("fail_closed", "allowed"), [(True, False), (False, True)])
async def test_a_storage_outage_refuses_or_allows_as_configured(
    fail_closed: bool, allowed: bool
) -> None:
    limiter = RateLimiter(fail_closed=fail_closed)
    limiter.strategy = BrokenStrategy()  # type: ignore[assignment]
    with capture_logs() as logs:
        result = await limiter.hit("5/minute", "login", "alice", name="login")
    assert result.unavailable
    assert result.allowed is allowed
    assert [(entry["log_level"], entry["outcome"]) for entry in logs] == [
        ("warning", "refused" if fail_closed else "allowed")
    ]
    await limiter.close()
