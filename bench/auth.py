"""What authentication costs per request, and what the caches buy.

    .venv/bin/python -m bench.auth        # about 30 s; JSON in bench/results/auth.json

Measures, in one process: verifying an access token with the verified-token cache and
without it (the gateway and every service verify each request), issuing a token, hashing a
password with Argon2id at the production defaults and at the testing profile, and one
rate-limit hit on memory storage and on Redis (when ``REDIS_URL`` or the local server
answers), and a failed login for an unknown user against one with a wrong password
(in-process, production Argon2 parameters: they should cost the same). Prints operations
per second and ratios.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mercato.platform.security.keys import KeySet, SigningKey
from mercato.platform.security.passwords import PasswordHasher
from mercato.platform.security.ratelimit import RateLimiter
from mercato.platform.security.tokens import StaticKeys, TokenIssuer, TokenVerifier

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "auth.json"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
BUDGET = 3.0  # seconds per measurement at most


async def rate(name: str, operation: Callable[[], Awaitable[Any]], *, limit: int) -> dict[str, Any]:
    """Run ``operation`` up to ``limit`` times or for BUDGET seconds; operations/second."""
    await operation()  # warm up
    started = time.perf_counter()
    count = 0
    while count < limit and time.perf_counter() - started < BUDGET:
        await operation()
        count += 1
    elapsed = time.perf_counter() - started
    return {"name": name, "operations": count, "seconds": elapsed, "per_second": count / elapsed}


def redis_answers(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 1):
            return True
    except OSError:
        return False


async def measure() -> list[dict[str, Any]]:
    keys = KeySet([SigningKey.generate()])
    issuer = TokenIssuer(keys, issuer="mercato", audience="mercato")
    jwks = keys.jwks()["keys"]
    cached = TokenVerifier(StaticKeys(jwks), issuer="mercato", audience="mercato")
    uncached = TokenVerifier(StaticKeys(jwks), issuer="mercato", audience="mercato", cache_size=0)
    token = issuer.issue("user-1", ["customer"]).token

    async def issue() -> None:
        issuer.issue("user-1", ["customer"])

    results = [
        await rate("verify token, uncached", lambda: uncached.verify(token), limit=20_000),
        await rate("verify token, cached", lambda: cached.verify(token), limit=500_000),
        await rate("issue token", issue, limit=20_000),
    ]
    production = PasswordHasher()
    testing = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    results.append(
        await rate("argon2id hash, production", lambda: production.hash("Zebra7Crossing"), limit=40)
    )
    results.append(
        await rate("argon2id hash, testing", lambda: testing.hash("Zebra7Crossing"), limit=2_000)
    )

    memory = RateLimiter()
    results.append(
        await rate(
            "rate limit hit, memory", lambda: memory.hit("1000000/minute", "bench"), limit=50_000
        )
    )
    await memory.close()
    if redis_answers(REDIS_URL):
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        shared = RateLimiter(REDIS_URL, prefix=prefix)
        results.append(
            await rate(
                "rate limit hit, redis", lambda: shared.hit("1000000/minute", "bench"), limit=20_000
            )
        )
        await shared.clear("1000000/minute", "bench")
        await shared.close()
    results += await failed_logins()
    return results


async def failed_logins() -> list[dict[str, Any]]:
    """Unknown user vs wrong password, alternated so that load drifts hit both alike."""
    import httpx

    from mercato.auth.app import create_app
    from mercato.settings import load_settings

    settings = load_settings(
        env_file=None,
        environment="testing",
        argon2_time_cost=2,
        argon2_memory_cost=19_456,
        argon2_parallelism=1,
        rate_limit_login="1000000/minute",
        rate_limit_login_address="1000000/minute",
        access_log=False,
    )
    app = create_app(settings)
    timings: dict[str, list[float]] = {
        "login failure, unknown user": [],
        "login failure, wrong password": [],
    }
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            account = {"username": "alice", "email": "a@example.com", "password": "Zebra7Crossing"}
            await client.post("/auth/register", json=account)
            attempts = {
                "login failure, unknown user": {"username": "nobody", "password": "Wr0ngGuess"},
                "login failure, wrong password": {"username": "alice", "password": "Wr0ngGuess"},
            }
            for _ in range(25):
                for name, body in attempts.items():
                    started = time.perf_counter()
                    response = await client.post("/auth/login", json=body)
                    timings[name].append(time.perf_counter() - started)
                    assert response.status_code == 401
    return [
        {
            "name": name,
            "operations": len(values),
            "seconds": sum(values),
            "per_second": len(values) / sum(values),
            "median_ms": sorted(values)[len(values) // 2] * 1000,
        }
        for name, values in timings.items()
    ]


def main() -> int:
    results = asyncio.run(measure())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"results": results}, indent=2))
    by_name = {r["name"]: r for r in results}
    base = by_name["verify token, uncached"]["per_second"]
    print(f"{'operation':32} {'ops/s':>12} {'µs/op':>10} {'vs uncached verify':>20}")
    for r in results:
        print(
            f"{r['name']:32} {r['per_second']:12,.0f} {1e6 / r['per_second']:10.1f} "
            f"{r['per_second'] / base:19.2f}x"
        )
    ratio = by_name["verify token, cached"]["per_second"] / base
    print(f"\nthe verified-token cache makes a repeated token {ratio:,.0f}x cheaper to check")
    if "rate limit hit, redis" in by_name:
        cost = (
            by_name["rate limit hit, memory"]["per_second"]
            / by_name["rate limit hit, redis"]["per_second"]
        )
        print(f"a rate-limit hit on Redis costs {cost:,.1f}x one in memory (two round trips)")
    unknown = by_name["login failure, unknown user"]["median_ms"]
    wrong = by_name["login failure, wrong password"]["median_ms"]
    print(
        f"failed login, median: unknown user {unknown:.1f} ms, wrong password {wrong:.1f} ms"
        f" (ratio {unknown / wrong:.2f})"
    )
    print(f"results: {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
