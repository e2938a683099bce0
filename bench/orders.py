"""Scenario 4, orders end to end: ``POST /api/v1/orders`` -> ``confirmed`` through the
gateway of ``mercato up``, embedded (SQLite, memory cache and broker) and on the servers
(PostgreSQL, Redis, RabbitMQ), spread over many products and on one hot product (every
reservation updates one row).

Per round and variant: new products with enough stock, ``IDLE`` orders placed one at a time
on the idle system (POST -> confirmed, from the order's own ``created_at`` / ``updated_at``),
then ``ORDERS`` orders ``CONCURRENCY`` at a time, each with an Idempotency-Key, until every
one has settled. Throughput is orders confirmed per second from the first POST to the last
confirmation. The load generator (this process, httpx) runs on the load core.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack
from datetime import datetime
from typing import Any

import httpx

from bench._harness import (
    LOAD_CORE,
    Config,
    Progress,
    Sample,
    Target,
    interleave,
    stat,
    this_process_on,
)
from bench._stack import (
    admin_token,
    create_product,
    mercato,
    place_with_retries,
    servers_answer,
    sign_up,
    wait_settled,
)

TITLE = "Orders end to end: POST -> confirmed, embedded and PostgreSQL + RabbitMQ"
CONCURRENCY = 20
PRIMARY = "orders_per_s"
SHOPPERS = 10
SPREAD = {"many": 10, "hot": 1}  # products the orders are spread over
NOTES = [
    "The p99 under load is measured at the fixed concurrency, i.e. at whatever rate the "
    "system sustains, not at exactly 200 orders/s."
]
TARGETS = [
    Target(
        "servers-rate-many",
        "servers, many products: >= 200 orders/s",
        "servers/many",
        "orders_per_s",
        ">=",
        200,
    ),
    Target(
        "servers-rate-hot",
        "servers, one hot product: >= 200 orders/s",
        "servers/hot",
        "orders_per_s",
        ">=",
        200,
    ),
    Target(
        "servers-idle-p99",
        "servers: p99 POST -> confirmed on an idle system < 100 ms",
        "servers/many",
        "idle_confirmed_p99_ms",
        "<=",
        100,
    ),
    Target(
        "servers-load-p99",
        "servers: p99 POST -> confirmed under load < 1 s",
        "servers/many",
        "confirmed_p99_ms",
        "<=",
        1000,
    ),
    Target(
        "embedded-idle-p99",
        "embedded: p99 POST -> confirmed on an idle system < 100 ms",
        "embedded/many",
        "idle_confirmed_p99_ms",
        "<=",
        100,
    ),
]


def counts(config: Config) -> tuple[int, int]:
    """(orders under load, idle orders) per measurement."""
    return config.scaled(200, 40), config.scaled(20, 5)


def estimate(config: Config) -> float:
    orders, idle = counts(config)
    # start-up of two `mercato up`, then about 25 orders/s under load and 20/s idle today.
    return 30 + 4 * config.rounds * (orders / 25 + idle / 20 + 2)


def seconds_between(order: dict[str, Any]) -> float:
    return (
        datetime.fromisoformat(order["updated_at"]) - datetime.fromisoformat(order["created_at"])
    ).total_seconds()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


async def one_round(
    base_url: str, shoppers: list[Any], products: int, orders: int, idle: int
) -> dict[str, float]:
    limits = httpx.Limits(max_connections=CONCURRENCY * 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        token = await admin_token(client)
        product_ids = [
            await create_product(client, token, stock=orders + idle) for _ in range(products)
        ]
        idle_latencies = []
        for _ in range(idle):
            placed = await place_with_retries(
                client, shoppers[0], [{"product_id": product_ids[0], "quantity": 1}]
            )
            if placed.order_id is None:
                raise RuntimeError(f"an idle order was not placed: {placed}")
            settled = await wait_settled(client, [(shoppers[0], placed.order_id)], interval=0.01)
            idle_latencies.append(seconds_between(settled[placed.order_id]))
        gate = asyncio.Semaphore(CONCURRENCY)
        post_latency: list[float] = []

        async def one(i: int) -> tuple[Any, str | None]:
            shopper = shoppers[i % len(shoppers)]
            async with gate:
                started = time.perf_counter()
                placed = await place_with_retries(
                    client, shopper, [{"product_id": product_ids[i % products], "quantity": 1}]
                )
                post_latency.append(time.perf_counter() - started)
            return shopper, placed.order_id

        wall_start = time.time()
        placed = await asyncio.gather(*(one(i) for i in range(orders)))
        owned = [(shopper, order_id) for shopper, order_id in placed if order_id]
        settled = await wait_settled(client, owned, within=180)
    confirmed = [o for o in settled.values() if o["status"] == "confirmed"]
    if not confirmed:
        raise RuntimeError("no order was confirmed")
    last = max(datetime.fromisoformat(o["updated_at"]).timestamp() for o in confirmed)
    to_confirmed = [seconds_between(order) for order in confirmed]
    return {
        "orders_per_s": len(confirmed) / (last - wall_start),
        "post_p50_ms": percentile(post_latency, 50) * 1000,
        "post_p99_ms": percentile(post_latency, 99) * 1000,
        "confirmed_p50_ms": percentile(to_confirmed, 50) * 1000,
        "confirmed_p99_ms": percentile(to_confirmed, 99) * 1000,
        "idle_confirmed_p50_ms": stat(idle_latencies).median * 1000,
        "idle_confirmed_p99_ms": percentile(idle_latencies, 99) * 1000,
        "not_confirmed": float(orders - len(confirmed)),
    }


def run(config: Config, progress: Progress) -> list[Sample]:
    orders, idle = counts(config)
    topologies = ["embedded", "servers"] if servers_answer() else ["embedded"]
    variants = [f"{topology}/{spread}" for topology in topologies for spread in SPREAD]
    progress.begin("orders", len(variants) * config.rounds)
    samples: list[Sample] = []
    with ExitStack() as stack:
        bases: dict[str, tuple[str, list[Any]]] = {}
        for topology in topologies:
            progress.step(f"starting mercato up ({topology}) and signing up {SHOPPERS} shoppers")
            up = stack.enter_context(
                mercato(config, f"orders-{topology}", servers=topology == "servers")
            )
            bases[topology] = (up.base_url, asyncio.run(_shoppers(up.base_url)))
        with this_process_on(LOAD_CORE, config.pin):
            for number, variant in interleave(variants, config.rounds):
                topology, spread = variant.split("/")
                progress.step(f"round {number}/{config.rounds} {variant}: {orders} orders")
                base_url, shoppers = bases[topology]
                found = asyncio.run(one_round(base_url, shoppers, SPREAD[spread], orders, idle))
                samples.append(Sample(variant, number, found))
                progress.step(
                    f"round {number}/{config.rounds} {variant}: "
                    f"{found['orders_per_s']:.1f} orders/s, ->confirmed p99 "
                    f"{found['confirmed_p99_ms']:.0f} ms, idle p99 "
                    f"{found['idle_confirmed_p99_ms']:.0f} ms",
                    advance=True,
                )
    return samples


async def _shoppers(base_url: str) -> list[Any]:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        return await sign_up(client, SHOPPERS)
