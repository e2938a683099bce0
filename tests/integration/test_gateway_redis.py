"""Rate limits shared by gateway instances through a real Redis, and failing closed when
Redis is gone."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from support.auth import bearer, issue_token
from support.gateway import gateway_settings, running
from support.servers import free_port
from support.standin import StandIn, serve

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


@pytest.fixture
async def cleanup(redis_url: str, redis_prefix: str) -> AsyncIterator[None]:
    yield
    client = redis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(f"{redis_prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def test_two_gateway_instances_share_one_limit(
    redis_url: str, redis_prefix: str, cleanup: None
) -> None:
    standin = StandIn()
    async with serve(standin) as upstream:
        settings = gateway_settings(
            {"products": upstream.url},
            redis_url=redis_url,
            rate_limit_prefix=redis_prefix,
            rate_limit_api="4/minute",
        )
        async with running(settings) as (_, first), running(settings) as (_, second):
            statuses = [
                (await client.get("/api/v1/products/echo")).status_code
                for client in (first, second, first, second, first, second)
            ]
            metrics_ready = (await first.get("/readyz")).json()["checks"]
    assert statuses == [200, 200, 200, 200, 429, 429]
    assert len(standin.received) == 4
    assert metrics_ready["ratelimit"] == "ok"


async def test_the_per_user_limit_is_shared_too(
    redis_url: str, redis_prefix: str, cleanup: None
) -> None:
    standin = StandIn()
    token = bearer(issue_token("shared-user"))
    async with serve(standin) as upstream:
        settings = gateway_settings(
            {"orders": upstream.url},
            redis_url=redis_url,
            rate_limit_prefix=redis_prefix,
            rate_limit_user="2/minute",
        )
        async with (
            running(settings, client=("192.0.2.1", 1)) as (_, first),
            running(settings, client=("192.0.2.2", 1)) as (_, second),
        ):
            statuses = [
                (await client.get("/api/v1/orders/echo", headers=token)).status_code
                for client in (first, second, first)
            ]
    assert statuses == [200, 200, 429]


async def test_limits_fail_closed_with_503_when_redis_is_down(redis_prefix: str) -> None:
    standin = StandIn()
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    async with serve(standin) as upstream:
        settings = gateway_settings(
            {"products": upstream.url}, redis_url=dead_redis, rate_limit_prefix=redis_prefix
        )
        async with running(settings) as (_, http):
            response = await http.get("/api/v1/products/echo")
            ready = await http.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "retry-after" in response.headers
    assert standin.received == []
    assert ready.status_code == 503


async def test_a_fixed_window_hit_on_redis_answers_what_limits_own_strategy_answers(
    redis_url: str, redis_prefix: str, cleanup: None
) -> None:
    """The one-round-trip hit (platform/security/ratelimit.py's script) against limits'
    hit then get_window_stats on the same Redis: the same verdicts, counts and reset, and
    the key expires with the window."""
    from mercato.platform.security.ratelimit import RateLimiter
    from support.ratelimits import assert_fixed_window_matches_limits

    limiter = RateLimiter(redis_url, prefix=redis_prefix, strategy="fixed-window")
    client = redis.Redis.from_url(redis_url)
    try:
        key = await assert_fixed_window_matches_limits(limiter, slack=1.5)
        ttl = await client.ttl(f"{redis_prefix}:{key}")
        assert 0 < ttl <= 60
    finally:
        await client.aclose()
        await limiter.close()


async def test_a_fixed_window_hit_is_one_redis_command(
    redis_url: str, redis_prefix: str, cleanup: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mercato.platform.security.ratelimit import RateLimiter

    limiter = RateLimiter(redis_url, prefix=redis_prefix, strategy="fixed-window")
    client = limiter.storage.bridge.get_connection()  # type: ignore[attr-defined]
    sent: list[object] = []
    execute = client.execute_command

    async def counting(*args: object, **options: object) -> object:
        sent.append(args[0])
        return await execute(*args, **options)

    try:
        await limiter.hit("10/minute", "api", "alice", name="api")  # loads the script
        monkeypatch.setattr(client, "execute_command", counting)
        result = await limiter.hit("10/minute", "api", "alice", name="api")
    finally:
        await limiter.close()
    assert sent == ["EVALSHA"]
    assert (result.allowed, result.remaining) == (True, 8)
