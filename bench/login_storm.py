"""Scenario 6, login storm isolation: the p99 of cached product reads through the gateway of
``mercato up`` (embedded), alone, then while 10 clients log in continuously with the
production Argon2id parameters (time cost 2, 19 MiB). Hashing runs in the hasher's own
threads at a lower priority (``nice`` +10), never on the event loop; the reads must barely
notice.

Every process of ``mercato up`` is on the servers' core: the hashing competes with the reads
for that one core, which is the harsh case (a deployment gives auth its own). The login
clients run in a thread of this process on the load core, beside wrk.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx

from bench._harness import (
    LOAD_CORE,
    Config,
    Endpoint,
    Progress,
    Sample,
    Target,
    http_seconds,
    measure_http,
    this_process_on,
)
from bench._stack import mercato, seed

TITLE = "Login storm isolation: cached product reads alone and while 10 clients log in"
CONCURRENCY = 10
PRIMARY = "p99_ms"
LOGIN_CLIENTS = 10
PASSWORD = "Storm-pass-1234"  # noqa: S105 - throw-away accounts of a scratch instance
PRODUCTION_ARGON2 = {
    "ARGON2_TIME_COST": "2",
    "ARGON2_MEMORY_COST": "19456",
    "ARGON2_PARALLELISM": "1",
    "RATE_LIMIT_LOGIN": "1000000/minute",
}
TARGETS = [
    Target(
        "storm-p99",
        "read p99 during the storm at most 1.5x the read p99 alone",
        "storm",
        "p99_ms",
        "<=",
        1.5,
        over="alone",
    ),
]
NOTES = [
    "The whole of `mercato up` shares the servers' core here, so the hashing takes CPU time "
    "from the reads: the ratio measures the event loop's isolation plus that share."
]


def estimate(config: Config) -> float:
    return 30 + http_seconds(config, 2)


@contextmanager
def storm(base_url: str, usernames: list[str]) -> Iterator[Callable[[], dict[str, float]]]:
    """``usernames`` log in again and again, one client each, until the block ends; yields
    a function giving the logins per second and the failed logins."""
    stop = threading.Event()
    counts = {"ok": 0, "failed": 0}

    async def client(username: str) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            while not stop.is_set():
                answer = await http.post(
                    "/api/v1/auth/login", json={"username": username, "password": PASSWORD}
                )
                counts["ok" if answer.status_code == 200 else "failed"] += 1

    async def all_clients() -> None:
        await asyncio.gather(*(client(name) for name in usernames))

    thread = threading.Thread(target=lambda: asyncio.run(all_clients()), daemon=True)
    started = time.perf_counter()
    thread.start()
    time.sleep(0.5)  # the storm is under way before the reads are measured
    try:
        yield lambda: {
            "logins_per_s": counts["ok"] / (time.perf_counter() - started),
            "login_failures": float(counts["failed"]),
        }
    finally:
        stop.set()
        thread.join(timeout=60)


def register(base_url: str, count: int) -> list[str]:
    names = [f"storm{n}{int(time.time())}" for n in range(count)]
    with httpx.Client(base_url=base_url, timeout=60) as http:
        for name in names:
            http.post(
                "/api/v1/auth/register",
                json={"username": name, "email": f"{name}@example.com", "password": PASSWORD},
            ).raise_for_status()
    return names


def run(config: Config, progress: Progress) -> list[Sample]:
    progress.begin("login_storm", 2 * config.rounds)
    progress.step("starting mercato up (embedded, production Argon2id)")
    with mercato(config, "login-storm", servers=False, env=PRODUCTION_ARGON2) as up:
        seeded = seed(up)
        usernames = register(up.base_url, LOGIN_CLIENTS)
        read = Endpoint(f"{up.base_url}/api/v1/products/{seeded.product_id}")
        with this_process_on(LOAD_CORE, config.pin):
            return measure_http(
                config,
                progress,
                {"alone": read, "storm": read},
                connections=CONCURRENCY,
                during={"storm": lambda: storm(up.base_url, usernames)},
            )
