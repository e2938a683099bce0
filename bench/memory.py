"""Scenario 8, memory: the resident memory of ``mercato up`` (embedded; the sum over all
its processes) idle, after the front-door load (cached product reads through the gateway)
and after an orders load, repeated to see whether it grows.
"""

from __future__ import annotations

import asyncio
import time

from bench._harness import (
    LOAD_CORE,
    Config,
    Progress,
    Sample,
    Target,
    this_process_on,
)
from bench._stack import mercato, mercato_pids, rss_mb, seed
from bench._wrk import wrk
from bench.orders import one_round

TITLE = "Memory: resident memory of mercato up idle, after load, across repeated loads"
CONCURRENCY = 50  # the front-door load; the orders load runs at the orders scenario's
PRIMARY = "rss_mb"
SETTLE = 3.0  # seconds after start-up or a load before reading the memory
TARGETS = [
    Target("idle", "idle: < 250 MB", "idle", "rss_mb", "<=", 250),
    Target(
        "after-load",
        "after load (the highest reading): < 400 MB",
        "after load, peak",
        "rss_mb",
        "<=",
        400,
    ),
    Target(
        "no-growth",
        "no growth: the last cycle's reading over the first's <= 1.05",
        "growth",
        "last_over_first",
        "<=",
        1.05,
    ),
]
NOTES = [
    "RSS is summed over the processes (VmRSS), so pages they share count once per process: "
    "an upper bound of what the system needs."
]


def cycles(config: Config) -> int:
    return max(2, config.rounds)  # growth needs two at least


def orders_per_cycle(config: Config) -> int:
    return config.scaled(200, 30)


def estimate(config: Config) -> float:
    per_cycle = 2 * config.seconds + orders_per_cycle(config) / 25 + 2 * SETTLE + 2
    return 15 + cycles(config) * per_cycle


def run(config: Config, progress: Progress) -> list[Sample]:
    from bench._stack import sign_up

    progress.begin("memory", cycles(config))
    progress.step("starting mercato up (embedded)")
    samples: list[Sample] = []
    with mercato(config, "memory", servers=False) as up:
        seeded = seed(up)

        async def shoppers() -> list[object]:
            import httpx

            async with httpx.AsyncClient(base_url=up.base_url, timeout=60) as client:
                return list(await sign_up(client, 10))

        people = asyncio.run(shoppers())
        time.sleep(SETTLE)

        def reading() -> float:
            return rss_mb(mercato_pids(up))

        idle = reading()
        samples.append(Sample("idle", 1, {"rss_mb": idle}))
        progress.step(f"idle: {idle:.0f} MB in {len(mercato_pids(up))} processes")
        after_orders = []
        url = f"{up.base_url}/api/v1/products/{seeded.product_id}"
        with this_process_on(LOAD_CORE, config.pin):
            for number in range(1, cycles(config) + 1):
                progress.step(f"cycle {number}: front-door load")
                wrk(url, 2 * config.seconds, config.pin, CONCURRENCY)
                time.sleep(SETTLE)
                samples.append(Sample("after front door", number, {"rss_mb": reading()}))
                progress.step(f"cycle {number}: {orders_per_cycle(config)} orders")
                asyncio.run(one_round(up.base_url, people, 10, orders_per_cycle(config), 1))
                time.sleep(SETTLE)
                after_orders.append(reading())
                samples.append(Sample("after orders", number, {"rss_mb": after_orders[-1]}))
                progress.step(f"cycle {number}: {after_orders[-1]:.0f} MB after orders",
                              advance=True)  # fmt: skip
    peak = max(s.metrics["rss_mb"] for s in samples)
    samples.append(Sample("after load, peak", 1, {"rss_mb": peak}))
    samples.append(Sample("growth", 1, {"last_over_first": after_orders[-1] / after_orders[0]}))
    return samples
