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
POLL_INTERVAL = 0.1  # seconds between two looks at the shoppers' pending orders
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
        await none_pending(client, shoppers, within=180)
        settled = await orders_of(client, owned)
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


async def none_pending(client: httpx.AsyncClient, shoppers: list[Any], *, within: float) -> None:
    """Wait until no shopper has a pending order: one ``GET /orders?status=pending`` per
    shopper every POLL_INTERVAL seconds. Polling every pending order's ``GET /orders/{id}``
    instead (``wait_settled``) cost the servers' core about 16% more CPU per order while the
    saga drained (bench/profile/orders_flow.py ``--poll bench``), in the measured window;
    the figures come from the orders' own timestamps, so how often the bench looks does
    not change them."""
    deadline = time.monotonic() + within
    while True:
        pages = await asyncio.gather(
            *(
                client.get(
                    "/api/v1/orders",
                    params={"status": "pending", "limit": 1},
                    headers=shopper.headers,
                )
                for shopper in shoppers
            )
        )
        for page in pages:
            page.raise_for_status()
        if all(page.json()["total"] == 0 for page in pages):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"orders still pending after {within} s")
        await asyncio.sleep(POLL_INTERVAL)


async def orders_of(
    client: httpx.AsyncClient, owned: list[tuple[Any, str]]
) -> dict[str, dict[str, Any]]:
    """The orders of ``owned`` as their owners list them (``GET /orders``, 100 a page,
    newest first, until each owner's are all found): a few requests, not one per order."""
    wanted: dict[str, tuple[Any, set[str]]] = {}
    for shopper, order_id in owned:
        wanted.setdefault(shopper.username, (shopper, set()))[1].add(order_id)

    async def of(shopper: Any, ids: set[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        offset = 0
        while len(found) < len(ids):
            page = await client.get(
                "/api/v1/orders", params={"limit": 100, "offset": offset}, headers=shopper.headers
            )
            page.raise_for_status()
            items = page.json()["items"]
            if not items:
                raise RuntimeError(f"{len(ids) - len(found)} orders of a shopper not listed")
            found.update((order["id"], order) for order in items if order["id"] in ids)
            offset += len(items)
        return found

    orders: dict[str, dict[str, Any]] = {}
    for part in await asyncio.gather(*(of(shopper, ids) for shopper, ids in wanted.values())):
        orders.update(part)
    return orders


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
