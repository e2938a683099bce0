"""Order throughput and latency, placed -> confirmed, through the gateway of `mercato up`.

Two topologies, the same scenario: embedded defaults (SQLite files, memory cache and broker)
and the servers of this machine (PostgreSQL in a throw-away database, Redis, RabbitMQ on a
private exchange). For each: sign up shoppers, stock ``PRODUCTS`` products with enough for
every order, place ``ORDERS`` orders ``CONCURRENCY`` at a time, spread over the products
(each with an Idempotency-Key), and wait until every one is confirmed. ``BENCH_PRODUCTS=1``
makes every reservation update one row: the hot-item case.

Before the load, ``IDLE_ORDERS`` orders are placed one at a time on the idle system (API.md
promises ``confirmed`` or ``rejected`` within two seconds). Reported per topology: throughput
(orders confirmed per second, from the first POST to the last confirmation), the POST
latency (p50/p99), and the time from POST to ``confirmed`` (p50/p99, from the order's own
``created_at`` / ``updated_at``, so polling adds nothing), idle and under load.
The table gives the servers' figures as a ratio of the embedded ones.

    .venv/bin/python -m bench.orders        # a minute or two; JSON in bench/results/orders.json
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.orders_flow import (  # noqa: E402
    FLOW_ENV,
    admin_token,
    create_product,
    place_with_retries,
    sign_up,
    wait_settled,
)
from support.processes import SERVICE_PORT_SETTINGS, mercato_up  # noqa: E402
from support.servers import (  # noqa: E402
    TEST_BROKER_URL,
    TEST_DATABASE_URL,
    TEST_REDIS_URL,
    _answers,
    free_port,
)

ORDERS = int(os.environ.get("BENCH_ORDERS", "300"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "20"))
#: Orders are spread over this many products; 1 makes every reservation fight for one row.
PRODUCTS = int(os.environ.get("BENCH_PRODUCTS", "10"))
SHOPPERS = 10
IDLE_ORDERS = 10
RESULTS = ROOT / "bench" / "results" / "orders.json"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _ports() -> dict[str, int]:
    ports: set[int] = set()
    while len(ports) < len(SERVICE_PORT_SETTINGS):
        ports.add(free_port())
    return dict(zip(SERVICE_PORT_SETTINGS, sorted(ports), strict=True))


async def scenario(base_url: str) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=CONCURRENCY * 2)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        token = await admin_token(client)
        product_ids = [
            await create_product(client, token, stock=ORDERS + IDLE_ORDERS) for _ in range(PRODUCTS)
        ]
        shoppers = await sign_up(client, SHOPPERS)
        idle = await idle_latencies(client, shoppers[0], product_ids[0])
        gate = asyncio.Semaphore(CONCURRENCY)
        post_latency: list[float] = []

        async def one(i: int) -> tuple[Any, str | None]:
            shopper = shoppers[i % SHOPPERS]
            async with gate:
                started = time.perf_counter()
                placed = await place_with_retries(
                    client, shopper, [{"product_id": product_ids[i % PRODUCTS], "quantity": 1}]
                )
                post_latency.append(time.perf_counter() - started)
            return shopper, placed.order_id

        wall_start = time.time()
        placed = await asyncio.gather(*(one(i) for i in range(ORDERS)))
        owned = [(s, oid) for s, oid in placed if oid]
        settled = await wait_settled(client, owned, within=120)
    confirmed = [o for o in settled.values() if o["status"] == "confirmed"]
    to_confirmed = [
        (
            datetime.fromisoformat(o["updated_at"]) - datetime.fromisoformat(o["created_at"])
        ).total_seconds()
        for o in confirmed
    ]
    last = max(datetime.fromisoformat(o["updated_at"]).timestamp() for o in confirmed)
    return {
        "orders": ORDERS,
        "placed": len(owned),
        "confirmed": len(confirmed),
        "throughput_per_s": len(confirmed) / (last - wall_start),
        "post_p50_ms": percentile(post_latency, 50) * 1000,
        "post_p99_ms": percentile(post_latency, 99) * 1000,
        "confirmed_p50_ms": percentile(to_confirmed, 50) * 1000,
        "confirmed_p99_ms": percentile(to_confirmed, 99) * 1000,
        "confirmed_mean_ms": statistics.fmean(to_confirmed) * 1000,
        "idle_confirmed_p50_ms": percentile(idle, 50) * 1000,
        "idle_confirmed_max_ms": max(idle) * 1000,
    }


async def idle_latencies(client: httpx.AsyncClient, shopper: Any, product_id: str) -> list[float]:
    """POST -> confirmed of ``IDLE_ORDERS`` orders placed one at a time on an idle system
    (API.md promises two seconds), from the order's own timestamps."""
    latencies: list[float] = []
    for _ in range(IDLE_ORDERS):
        placed = await place_with_retries(
            client, shopper, [{"product_id": product_id, "quantity": 1}]
        )
        assert placed.order_id is not None
        order = (await wait_settled(client, [(shopper, placed.order_id)], interval=0.01))[
            placed.order_id
        ]
        latencies.append(
            (
                datetime.fromisoformat(order["updated_at"])
                - datetime.fromisoformat(order["created_at"])
            ).total_seconds()
        )
    return latencies


async def stages(urls: dict[str, str]) -> dict[str, float]:
    """Median seconds of each hop of the saga, from the outbox and inbox timestamps."""
    from sqlalchemy import select

    from mercato.messaging.tables import inbox, outbox
    from mercato.platform.db import Database

    async def rows(service: str, statement: Any) -> list[Any]:
        database = Database(urls[service], schema=service)
        try:
            async with database.unit_of_work(read_only=True) as uow:
                return list((await uow.session.execute(statement)).all())
        finally:
            await database.dispose()

    def created(event_type: str) -> Any:
        return select(outbox.c.event_id, outbox.c.created_at).where(
            outbox.c.event_type == event_type
        )

    def handled(consumer: str, event_type: str) -> Any:
        return select(inbox.c.event_id, inbox.c.handled_at).where(
            inbox.c.consumer == consumer, inbox.c.event_type == event_type
        )

    placed = await rows("orders", created("order.placed"))
    reserved = await rows("products", created("stock.reserved"))
    products_in = dict(await rows("products", handled("products", "order.placed")))
    orders_in = dict(await rows("orders", handled("orders", "stock.reserved")))

    def hop(events: list[Any], handled_at: dict[str, datetime]) -> float:
        waits = [
            (_aware(handled_at[event_id]) - _aware(at)).total_seconds()
            for event_id, at in events
            if event_id in handled_at
        ]
        return statistics.median(waits) * 1000 if waits else float("nan")

    # Each hop: the event's commit (outbox row) -> the consumer's commit (inbox row), i.e.
    # relay + broker + queueing + handling.
    return {
        "placed->reserved_ms": hop(placed, products_in),
        "reserved->confirmed_ms": hop(reserved, orders_in),
    }


def _aware(value: datetime) -> datetime:
    from datetime import UTC

    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def run_topology(name: str, env: dict[str, str]) -> dict[str, Any]:
    environment = {**FLOW_ENV, "LOG_LEVEL": "WARNING", **env}
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-orders-{name}-") as tmp,
        mercato_up(Path(tmp), _ports(), env=environment) as up,
    ):
        result = asyncio.run(scenario(up.base_url))
        urls = {
            service: env.get("DATABASE_URL") or f"sqlite+aiosqlite:///{up.data_dir / service}.db"
            for service in ("orders", "products")
        }
        result["stages"] = asyncio.run(stages(urls))
    result["topology"] = name
    return result


def servers_env(stack: ExitStack) -> dict[str, str] | None:
    if not (
        _answers(TEST_DATABASE_URL, 5432)
        and _answers(TEST_REDIS_URL, 6379)
        and _answers(TEST_BROKER_URL, 5672)
    ):
        return None
    import asyncpg

    name = f"bench_orders_{uuid.uuid4().hex[:10]}"
    admin_dsn = TEST_DATABASE_URL.replace("+asyncpg", "").rsplit("/", 1)[0] + "/postgres"

    async def sql(statement: str) -> None:
        connection = await asyncpg.connect(admin_dsn)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(sql(f'CREATE DATABASE "{name}"'))
    stack.callback(lambda: asyncio.run(sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')))
    exchange = f"bench-{uuid.uuid4().hex[:8]}"
    stack.callback(lambda: asyncio.run(_delete_topology(exchange)))
    return {
        "DATABASE_URL": TEST_DATABASE_URL.rsplit("/", 1)[0] + f"/{name}",
        "REDIS_URL": TEST_REDIS_URL,
        "BROKER_URL": TEST_BROKER_URL,
        "MESSAGING_EXCHANGE": exchange,
        "RATE_LIMIT_PREFIX": exchange,
    }


async def _delete_topology(exchange: str) -> None:
    from mercato.settings import load_settings
    from support.messaging_apps import delete_rabbit_topology

    settings = load_settings(env_file=None, broker_url=TEST_BROKER_URL, messaging_exchange=exchange)
    await delete_rabbit_topology(settings, ["auth", "users", "products", "orders", "notifications"])


def main() -> int:
    results = [run_topology("embedded", {})]
    with ExitStack() as stack:
        env = servers_env(stack)
        if env is None:
            print("servers: PostgreSQL, Redis or RabbitMQ not answering; skipped")
        else:
            results.append(run_topology("servers", env))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    summary = {"orders": ORDERS, "concurrency": CONCURRENCY, "products": PRODUCTS, "runs": results}
    RESULTS.write_text(json.dumps(summary, indent=2))
    base = results[0]
    columns = [
        ("throughput_per_s", "orders/s"),
        ("post_p50_ms", "POST p50 ms"),
        ("post_p99_ms", "POST p99 ms"),
        ("confirmed_p50_ms", "->confirmed p50 ms"),
        ("confirmed_p99_ms", "->confirmed p99 ms"),
        ("idle_confirmed_p50_ms", "idle ->conf. p50"),
        ("idle_confirmed_max_ms", "idle ->conf. max"),
    ]
    print(f"\n{ORDERS} orders over {PRODUCTS} products, {CONCURRENCY} at a time, via the gateway")
    print(f"{'topology':<10}" + "".join(f"{label:>20}" for _, label in columns))
    for run in results:
        cells = []
        for key, _ in columns:
            ratio = run[key] / base[key] if base[key] else float("nan")
            cells.append(f"{run[key]:>11.1f} ({ratio:4.2f}x)")
        print(f"{run['topology']:<10}" + "".join(f"{c:>20}" for c in cells))
    print(f"(ratios relative to embedded; all {sum(r['confirmed'] for r in results)} confirmed)")
    hops = list(base["stages"])
    print("\nmedian ms per hop of the saga (event committed -> consumer committed its effect)")
    print(f"{'topology':<10}" + "".join(f"{hop.removesuffix('_ms'):>20}" for hop in hops))
    for run in results:
        print(f"{run['topology']:<10}" + "".join(f"{run['stages'][h]:>20.1f}" for h in hops))
    print(f"results: {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
