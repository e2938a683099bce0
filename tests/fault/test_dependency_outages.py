"""A database or cache outage never strands an order (issue 17).

`mercato up` runs on a private PostgreSQL (``tests/support/postgres_node.py``), on the
in-memory broker and on a private RabbitMQ node; shoppers place 200 orders through the
gateway, each with an Idempotency-Key, retrying with the same key on 409, 5xx and network
errors as a well-behaved client does. A few seconds in, PostgreSQL is crashed
(``pg_ctl stop -m immediate``) and started again 8 s later; in another run a private Redis
is SIGKILLed for 8 s instead. Afterwards everything is accounted for:

- every order answered 201 exists exactly once and no other order exists;
- every one of them settles (confirmed or rejected) within ``SETTLE_BOUND`` seconds of the
  dependency's return, and products consumed each ``order.placed`` exactly once;
- no request was answered 500 (or any 5xx but 503), and every 503 carried ``Retry-After``
  and a problem+json body;
- units sold + units left == stock at start, per product;
- nothing was dead-lettered (``mercato events dlq list``, and the broker's DLQ queues).

One more run checks that the poison case still works while the database is healthy: a body
that is no envelope and an ``order.placed`` that fails in its handler every time end in the
dead letters (the latter after ``MESSAGING_MAX_ATTEMPTS``) while the other orders flow.

Each run prints its figures (run with ``-s``) and records them as the ``figures`` property
of the test (JUnit XML).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

from support.orders_flow import FLOW_ENV, Shopper, admin_token, create_product, sign_up
from support.postgres_node import PostgresNode
from support.processes import RunningMercato, free_ports, mercato_up
from support.rabbit_node import RabbitNode
from support.redis_node import RedisNode
from support.servers import started

pytestmark = [pytest.mark.anyio, pytest.mark.fault, pytest.mark.timeout(420)]

ORDERS = 200
CONCURRENCY = 20
SHOPPERS = 20
PRODUCTS = 3
STOCK = 100  # per product; the orders ask for about 300 units, so some are rejected
CRASH_AFTER = 60  # orders answered 201 before the dependency is crashed: a few seconds in
OUTAGE = 8.0  # seconds the dependency stays down
SETTLE_BOUND = 60.0  # seconds after its return by which every acknowledged order settles
CLIENT_ATTEMPTS = 80  # a client retries this often (backoff capped at 1 s): over a minute
MAX_ATTEMPTS = 3  # MESSAGING_MAX_ATTEMPTS of these runs

Report = Callable[[str, dict[str, Any]], None]


@pytest.fixture
def report(record_property: Callable[[str, object], None]) -> Report:
    def emit(name: str, figures: dict[str, Any]) -> None:
        text = json.dumps(figures, indent=2, default=str)
        print(f"\n{name}: {text}")
        record_property("figures", json.dumps(figures, default=str))

    return emit


@pytest.fixture
def private_postgres() -> Iterator[PostgresNode]:
    with started(PostgresNode()) as node:
        yield node


@pytest.fixture
def private_redis() -> Iterator[RedisNode]:
    with started(RedisNode()) as node:
        yield node


def shop_env(database_url: str, **extra: str) -> dict[str, str]:
    """`mercato up` for these runs: one PostgreSQL for every service, fast messaging retries,
    and a fresh exchange (so runs sharing a RabbitMQ node never see each other's queues)."""
    return {
        **FLOW_ENV,
        "DATABASE_URL": database_url,
        "MESSAGING_EXCHANGE": f"mercato.fault.{uuid.uuid4().hex[:8]}",
        "MESSAGING_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "MESSAGING_RETRY_BACKOFF": "0.2",
        "MESSAGING_RETRY_BACKOFF_MAX": "2.0",
        "OUTBOX_POLL_INTERVAL": "0.5",
        **extra,
    }


def plain_dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


# --- the client side ----------------------------------------------------------------------


@dataclass
class Tally:
    """What the shoppers saw."""

    acked: dict[str, str] = field(default_factory=dict)  # idempotency key -> order id
    owners: dict[str, Shopper] = field(default_factory=dict)  # order id -> its shopper
    bodies: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # key -> its items
    statuses: Counter[int] = field(default_factory=Counter)
    network_errors: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)  # 5xx other than 503
    bad_503s: list[str] = field(default_factory=list)  # 503 without Retry-After/problem+json
    refused: list[str] = field(default_factory=list)  # 4xx a retry cannot fix
    gave_up: list[str] = field(default_factory=list)
    last_ack: float = 0.0  # time.monotonic() of the last 201
    returned: bool = False  # the dependency is back
    late_503s: Counter[str] = field(default_factory=Counter)  # 503s after it, by detail


def check_503(response: httpx.Response, tally: Tally) -> None:
    problem = response.headers.get("content-type", "").startswith("application/problem+json")
    if "retry-after" not in response.headers or not problem:
        tally.bad_503s.append(
            f"{response.headers.get('content-type')} retry-after="
            f"{response.headers.get('retry-after')} {response.text[:200]}"
        )


def problem_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:100]
    return f"{body.get('dependency')}: {body.get('detail')}"[:160]


async def place(
    client: httpx.AsyncClient, shopper: Shopper, items: list[dict[str, Any]], tally: Tally
) -> None:
    key = uuid.uuid4().hex
    headers = {**shopper.headers, "Idempotency-Key": key}
    for attempt in range(CLIENT_ATTEMPTS):
        try:
            response = await client.post("/api/v1/orders", json={"items": items}, headers=headers)
        except httpx.HTTPError as exc:
            tally.network_errors[type(exc).__name__] += 1
        else:
            tally.statuses[response.status_code] += 1
            if response.status_code == 201:
                order_id = str(response.json()["id"])
                tally.acked[key] = order_id
                tally.owners[order_id] = shopper
                tally.bodies[key] = items
                tally.last_ack = time.monotonic()
                return
            if response.status_code == 503:
                check_503(response, tally)
                if tally.returned:
                    tally.late_503s[problem_detail(response)] += 1
            elif response.status_code >= 500:
                tally.server_errors.append(f"{response.status_code} {response.text[:300]}")
            elif response.status_code != 409:  # 409: the same key is still in flight
                tally.refused.append(f"{response.status_code} {response.text[:300]}")
                return
        await asyncio.sleep(min(0.1 * 2**attempt, 1.0))
    tally.gave_up.append(key)


async def resend_some(client: httpx.AsyncClient, tally: Tally, count: int = 20) -> list[bool]:
    """Send ``count`` acknowledged orders again with their keys, as a client whose answer got
    lost does; for each, whether it got the same order back."""
    same: list[bool] = []
    for key in random.Random(7).sample(sorted(tally.acked), min(count, len(tally.acked))):
        order_id = tally.acked[key]
        headers = {**tally.owners[order_id].headers, "Idempotency-Key": key}
        again = await client.post(
            "/api/v1/orders", json={"items": tally.bodies[key]}, headers=headers
        )
        same.append(again.status_code == 201 and again.json()["id"] == order_id)
    return same


@dataclass
class Readiness:
    """The gateway's /readyz as an operator's probe sees it, sampled through the run."""

    during: Counter[int] = field(default_factory=Counter)
    after: Counter[int] = field(default_factory=Counter)
    failing_body: str | None = None
    final: int | None = None  # once the backlog drained


async def sample_readiness(
    client: httpx.AsyncClient, readiness: Readiness, down: asyncio.Event, up: asyncio.Event
) -> None:
    while True:
        try:
            response = await client.get("/readyz", timeout=5)
        except httpx.HTTPError:
            status = 0
        else:
            status = response.status_code
            if status != 200 and readiness.failing_body is None:
                readiness.failing_body = response.text[:500]
        if up.is_set():
            readiness.after[status] += 1
        elif down.is_set():
            readiness.during[status] += 1
        await asyncio.sleep(0.5)


# --- the accounting -----------------------------------------------------------------------


async def pending_count(dsn: str, order_ids: list[str]) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return int(
            await connection.fetchval(
                "SELECT count(*) FROM orders.orders WHERE status = 'pending' AND id = ANY($1)",
                order_ids,
            )
        )
    finally:
        await connection.close()


async def wait_drained(dsn: str, order_ids: list[str], since: float) -> float | None:
    """Seconds after ``since`` at which no acknowledged order was pending; None if some
    still were ``SETTLE_BOUND`` seconds after it."""
    while time.monotonic() < since + SETTLE_BOUND:
        try:
            if not await pending_count(dsn, order_ids):
                return round(time.monotonic() - since, 1)
        except (OSError, asyncpg.PostgresError):
            pass  # still recovering
        await asyncio.sleep(0.25)
    return None


async def ledger(dsn: str) -> dict[str, Any]:
    """What the databases say: orders by status, units sold and left per product, how many
    ``order.placed`` products consumed, dead letters per schema."""
    connection = await asyncpg.connect(dsn)
    try:
        orders = {
            r["id"]: r["status"]
            for r in await connection.fetch("SELECT id, status FROM orders.orders")
        }
        sold = {
            r["product_id"]: int(r["units"])
            for r in await connection.fetch(
                "SELECT l.product_id, sum(l.quantity) AS units FROM orders.order_lines l"
                " JOIN orders.orders o ON o.id = l.order_id WHERE o.status = 'confirmed'"
                " GROUP BY l.product_id"
            )
        }
        left = {
            r["id"]: int(r["stock"])
            for r in await connection.fetch("SELECT id, stock FROM products.products")
        }
        consumed = int(
            await connection.fetchval(
                "SELECT count(*) FROM products.messaging_inbox"
                " WHERE consumer = 'products' AND event_type = 'order.placed'"
            )
        )
        dead: dict[str, int] = {}
        for schema in ("auth", "users", "products", "orders"):
            table = f"{schema}.messaging_dead_letters"
            if await connection.fetchval("SELECT to_regclass($1)", table) is not None:
                count = await connection.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608
                dead[schema] = int(count)
    finally:
        await connection.close()
    return {"orders": orders, "sold": sold, "left": left, "consumed": consumed, "dead": dead}


def dlq_list(database_url: str) -> list[dict[str, Any]]:
    """`mercato events dlq list --json`, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if k not in {"MERCATO_CONFIG", "BROKER_URL"}}
    env.update({"ENVIRONMENT": "development", "DATABASE_URL": database_url})
    result = subprocess.run(
        [sys.executable, "-m", "mercato", "events", "dlq", "list", "--json"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return [json.loads(line) for line in result.stdout.decode().splitlines() if line.strip()]


async def broker_dead_letters(url: str, exchange: str) -> dict[str, int]:
    """Messages in the RabbitMQ dead-letter queue of each consumer group."""
    from mercato.serving import consumer_groups

    found: dict[str, int] = {}
    connection = await aio_pika.connect(url)
    try:
        for group in consumer_groups():
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(f"{exchange}.{group}.dlq", passive=True)
                found[group] = int(queue.declaration_result.message_count or 0)
            except aio_pika.exceptions.ChannelClosed:
                found[group] = 0  # never declared: nothing there
    finally:
        await connection.close()
    return found


async def metric_total(client: httpx.AsyncClient, running: RunningMercato, name: str) -> float:
    """The sum of counter ``name`` over every service's ``/metrics`` (each labelled series
    once, should services share a registry)."""
    series: dict[str, float] = {}
    for service in running.ports:
        if service == "gateway":
            continue
        text = (await client.get(f"{running.url(service)}/metrics")).text
        for line in text.splitlines():
            if line.startswith((f"{name}{{", f"{name} ")):
                labels, _, value = line.rpartition(" ")
                series[labels] = float(value)
    return sum(series.values())


def log_errors(running: RunningMercato) -> tuple[Counter[str], list[str]]:
    """Error-level events of the run's JSON log, by service and message, and the first few
    unhandled exceptions (service, path, last line of the traceback)."""
    found: Counter[str] = Counter()
    unhandled: list[str] = []
    for line in running.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict) or entry.get("level") not in {"error", "critical"}:
            continue
        service = entry.get("service") or entry.get("logger", "?")
        found[f"{service}: {str(entry.get('event'))[:120]}"] += 1
        if entry.get("exception") and len(unhandled) < 5:
            last = str(entry["exception"]).strip().splitlines()[-1]
            unhandled.append(f"{service} {entry.get('path', '')} {entry.get('event')}: {last}")
    return found, unhandled


async def event_trail(dsn: str, order_id: str) -> list[str]:
    """Where the saga of one order stopped: its events in each outbox (sent or not) and
    whether each consumer's inbox has them."""
    connection = await asyncpg.connect(dsn)
    found: list[str] = []
    try:
        for schema in ("orders", "products"):
            rows = await connection.fetch(
                f"SELECT event_id, event_type, sent_at, attempts, last_error"  # noqa: S608
                f" FROM {schema}.messaging_outbox WHERE payload LIKE $1 ORDER BY seq",
                f"%{order_id}%",
            )
            for row in rows:
                handled = await connection.fetch(
                    "SELECT consumer FROM products.messaging_inbox WHERE event_id = $1"
                    " UNION ALL SELECT consumer FROM orders.messaging_inbox WHERE event_id = $1",
                    row["event_id"],
                )
                found.append(
                    f"{schema} outbox {row['event_type']} sent_at={row['sent_at']}"
                    f" attempts={row['attempts']} last_error={row['last_error']}"
                    f" handled_by={[h['consumer'] for h in handled]}"
                )
    finally:
        await connection.close()
    return found


def trail(running: RunningMercato, order_id: str) -> list[str]:
    """What the log says about one order: service, level and message of each line."""
    found = []
    for line in running.log().splitlines():
        if order_id in line:
            try:
                entry = json.loads(line)
            except ValueError:
                found.append(line[:160])
                continue
            found.append(f"{entry.get('service')} {entry.get('level')} {entry.get('event')}")
    return found[:12]


# --- one run ------------------------------------------------------------------------------


@dataclass
class Outage:
    name: str
    crash: Callable[[], None]
    restart: Callable[[], None]


async def run_outage(
    running: RunningMercato, database_url: str, outage: Outage
) -> tuple[dict[str, Any], Tally, dict[str, Any]]:
    """Place ORDERS orders, crash the dependency after CRASH_AFTER were acknowledged, bring
    it back OUTAGE seconds later, wait for the backlog; return the figures, what the
    clients saw and the ledger."""
    dsn = plain_dsn(database_url)
    async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as client:
        token = await admin_token(client)
        product_ids = [await create_product(client, token, stock=STOCK) for _ in range(PRODUCTS)]
        shoppers = await sign_up(client, SHOPPERS)
        rng = random.Random(17)
        plan = [
            (
                shoppers[i % SHOPPERS],
                [{"product_id": rng.choice(product_ids), "quantity": rng.randint(1, 2)}],
            )
            for i in range(ORDERS)
        ]
        tally = Tally()
        gate = asyncio.Semaphore(CONCURRENCY)
        enough, down, up = asyncio.Event(), asyncio.Event(), asyncio.Event()
        readiness = Readiness()

        async def one(shopper: Shopper, items: list[dict[str, Any]]) -> None:
            async with gate:
                await place(client, shopper, items, tally)
            if len(tally.acked) >= CRASH_AFTER:
                enough.set()

        async def crash_and_restart() -> tuple[float, float]:
            await enough.wait()
            await asyncio.to_thread(outage.crash)
            crashed = time.monotonic()
            down.set()
            await asyncio.sleep(OUTAGE)  # the outage itself: a duration, not a wait for state
            await asyncio.to_thread(outage.restart)
            up.set()
            tally.returned = True
            return crashed, time.monotonic()

        sampler = asyncio.create_task(sample_readiness(client, readiness, down, up))
        outage_task = asyncio.create_task(crash_and_restart())
        started = time.monotonic()
        await asyncio.gather(*(one(s, items) for s, items in plan))
        placed = time.monotonic()
        crashed_at, restarted_at = await outage_task
        acked_ids = list(tally.acked.values())
        drained = await wait_drained(dsn, acked_ids, restarted_at)
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        readiness.final = (await client.get("/readyz")).status_code
        dead_lettered = await metric_total(client, running, "messaging_events_dead_lettered_total")
        retried = await metric_total(client, running, "messaging_events_retried_total")
        resent = await resend_some(client, tally)
        book = await ledger(dsn)
        settled_by_api: Counter[str] = Counter()
        for oid in acked_ids:
            answer = await client.get(f"/api/v1/orders/{oid}", headers=tally.owners[oid].headers)
            settled_by_api[answer.json()["status"]] += 1
        left_by_api = {}
        for pid in product_ids:
            response = await client.get(
                f"/api/v1/products/{pid}", headers={"Cache-Control": "no-cache"}
            )
            left_by_api[pid] = int(response.json()["stock"])

    statuses = Counter(book["orders"][oid] for oid in acked_ids if oid in book["orders"])
    stranded = sorted(oid for oid in acked_ids if book["orders"].get(oid) == "pending")
    errors, exceptions = log_errors(running)
    figures = {
        "dependency_crashed": outage.name,
        "orders_planned": ORDERS,
        "orders_acked": len(tally.acked),
        "order_rows": len(book["orders"]),
        "settled": statuses["confirmed"] + statuses["rejected"],
        "by_status": dict(statuses),
        "by_status_via_api": dict(settled_by_api),
        "seconds_to_drain_after_return": drained,
        "last_ack_seconds_after_return": round(tally.last_ack - restarted_at, 1),
        "answered_500": tally.statuses[500],
        "answered_5xx_not_503": len(tally.server_errors),
        "answered_503": tally.statuses[503],
        "answered_409_key_in_flight": tally.statuses[409],
        "503s_after_return": dict(tally.late_503s.most_common(5)),
        "503_without_retry_after_or_problem": len(tally.bad_503s),
        "http_answers": {str(k): v for k, v in sorted(tally.statuses.items())},
        "network_errors": dict(tally.network_errors),
        "clients_gave_up": len(tally.gave_up),
        "refused": tally.refused[:5],
        "order_placed_consumed": book["consumed"],
        "units_at_start": PRODUCTS * STOCK,
        "units_sold": sum(book["sold"].get(p, 0) for p in product_ids),
        "units_left": sum(book["left"][p] for p in product_ids),
        "units_left_via_api": sum(left_by_api.values()),
        "dead_letters": book["dead"],
        "dead_lettered_metric": dead_lettered,
        "retried_metric": retried,
        "resends_after_drain": len(resent),
        "resends_with_another_answer": sum(1 for same in resent if not same),
        "outage_seconds": round(restarted_at - crashed_at, 1),
        "crashed_after_seconds": round(crashed_at - started, 1),
        "placing_seconds": round(placed - started, 1),
        "readyz_during_outage": dict(readiness.during),
        "readyz_after_return": dict(readiness.after),
        "readyz_at_the_end": readiness.final,
        "readyz_failing_body": readiness.failing_body,
        "server_errors": tally.server_errors[:5],
        "bad_503s": tally.bad_503s[:3],
        "log_errors": dict(errors.most_common(10)),
        "log_exceptions": exceptions,
        "product_ids": product_ids,
        "stranded": {
            oid: {"log": trail(running, oid), "events": await event_trail(dsn, oid)}
            for oid in stranded[:5]
        },
    }
    return figures, tally, book


def assert_accounted(figures: dict[str, Any], tally: Tally, book: dict[str, Any]) -> None:
    acked_ids = list(tally.acked.values())
    assert not tally.gave_up, figures
    assert not tally.refused, figures
    assert figures["answered_5xx_not_503"] == 0, tally.server_errors[:5]
    assert figures["503_without_retry_after_or_problem"] == 0, tally.bad_503s[:5]
    assert figures["orders_acked"] == ORDERS
    assert len(set(acked_ids)) == len(acked_ids)  # one order per key
    assert set(book["orders"]) == set(acked_ids)  # every acked order exists, no other does
    assert figures["seconds_to_drain_after_return"] is not None, figures["by_status"]
    assert figures["settled"] == ORDERS, figures["by_status"]
    assert book["consumed"] == ORDERS
    for pid in figures["product_ids"]:
        assert book["sold"].get(pid, 0) + book["left"][pid] == STOCK, (pid, book)
    assert not any(book["dead"].values()), book["dead"]
    assert figures["dead_lettered_metric"] == 0
    assert figures["resends_with_another_answer"] == 0
    assert len(book["orders"]) == ORDERS  # the resends made no order
    assert 500 not in figures["readyz_during_outage"]
    assert figures["readyz_at_the_end"] == 200


# --- the runs -----------------------------------------------------------------------------


async def crash_while_ordering(
    tmp_path: Path,
    env: dict[str, str],
    database_url: str,
    outage: Outage,
    broker: str,
    report: Report,
) -> dict[str, Any]:
    """Place the orders through `mercato up` while ``outage`` happens, account for every one
    of them, and check no event was dead-lettered (database record and broker queues)."""
    with mercato_up(tmp_path, free_ports(), env=env, ready_timeout=120) as running:
        figures, tally, book = await run_outage(running, database_url, outage)
        dlq = await asyncio.to_thread(dlq_list, database_url)
        broker_dlq = (
            await broker_dead_letters(env["BROKER_URL"], env["MESSAGING_EXCHANGE"])
            if broker == "rabbitmq"
            else {}
        )
    figures.update(broker=broker, dlq_listed=len(dlq), broker_dlq=broker_dlq)
    report(f"{outage.name} crash, {broker} broker", figures)
    assert_accounted(figures, tally, book)
    assert dlq == []
    assert not any(broker_dlq.values()), broker_dlq
    return figures


def on_broker(env: dict[str, str], broker: str, request: pytest.FixtureRequest) -> dict[str, str]:
    if broker == "rabbitmq":
        env["BROKER_URL"] = request.getfixturevalue("rabbit_node").url
    return env


@pytest.mark.parametrize("broker", ["memory", "rabbitmq"])
async def test_a_postgresql_crash_strands_no_order(
    tmp_path: Path,
    private_postgres: PostgresNode,
    broker: str,
    request: pytest.FixtureRequest,
    report: Report,
) -> None:
    database_url = private_postgres.create_database("mercato")
    env = on_broker(shop_env(database_url), broker, request)
    outage = Outage("postgresql", private_postgres.crash, private_postgres.start)
    figures = await crash_while_ordering(tmp_path, env, database_url, outage, broker, report)
    assert figures["readyz_during_outage"].get(503), figures["readyz_during_outage"]


@pytest.mark.parametrize("broker", ["memory", "rabbitmq"])
async def test_a_redis_crash_strands_no_order(
    tmp_path: Path,
    postgres_url: str,
    private_redis: RedisNode,
    broker: str,
    request: pytest.FixtureRequest,
    report: Report,
) -> None:
    env = on_broker(shop_env(postgres_url, REDIS_URL=private_redis.url), broker, request)
    outage = Outage("redis", private_redis.kill, private_redis.start)
    await crash_while_ordering(tmp_path, env, postgres_url, outage, broker, report)


def envelope(event_type: str, data: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "id": str(uuid.uuid4()),
            "type": event_type,
            "occurred_at": datetime.now(UTC).isoformat(),
            "source": "fault-test",
            "data": data,
        }
    ).encode()


async def test_poison_messages_are_dead_lettered_while_the_database_is_healthy(
    tmp_path: Path, postgres_url: str, rabbit_node: RabbitNode, report: Report
) -> None:
    """A body that is no envelope is dead-lettered at once; an ``order.placed`` whose handler
    fails every time (a quantity beyond the stock column's range) after MAX_ATTEMPTS; the
    orders placed around them settle and nothing else is dead-lettered."""
    env = shop_env(postgres_url, BROKER_URL=rabbit_node.url)
    exchange_name = env["MESSAGING_EXCHANGE"]
    with mercato_up(tmp_path, free_ports(), env=env, ready_timeout=120) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as client:
            token = await admin_token(client)
            product_id = await create_product(client, token, stock=STOCK)
            shoppers = await sign_up(client, 5)
            poison = envelope(
                "order.placed",
                {
                    "order_id": str(uuid.uuid4()),
                    "user_id": "fault-test",
                    "items": [{"product_id": product_id, "quantity": 2**40}],
                    "total": "1.00",
                    "currency": "EUR",
                },
            )
            connection = await aio_pika.connect(rabbit_node.url)
            try:
                channel = await connection.channel()
                exchange = await channel.get_exchange(exchange_name, ensure=True)
                for body in (b"not an envelope", poison):
                    await exchange.publish(aio_pika.Message(body), routing_key="order.placed")
            finally:
                await connection.close()
            tally = Tally()
            await asyncio.gather(
                *(
                    place(
                        client, shoppers[i % 5], [{"product_id": product_id, "quantity": 1}], tally
                    )
                    for i in range(20)
                )
            )
            acked_ids = list(tally.acked.values())
            drained = await wait_drained(plain_dsn(postgres_url), acked_ids, time.monotonic())
            letters: list[dict[str, Any]] = []
            for _ in range(240):  # the poison needs MAX_ATTEMPTS deliveries: a few seconds
                letters = await asyncio.to_thread(dlq_list, postgres_url)
                if len(letters) >= 2:
                    break
                await asyncio.sleep(0.25)
            book = await ledger(plain_dsn(postgres_url))
            broker_dlq = await broker_dead_letters(rabbit_node.url, exchange_name)
    figures = {
        "orders_acked": len(tally.acked),
        "seconds_to_settle": drained,
        "by_status": dict(Counter(book["orders"][oid] for oid in acked_ids)),
        "dead_letters": [
            {k: letter[k] for k in ("service", "consumer", "event_type", "attempts", "error")}
            for letter in letters
        ],
        "broker_dlq": broker_dlq,
        "http_answers": {str(k): v for k, v in sorted(tally.statuses.items())},
        "log_errors": dict(log_errors(running)[0].most_common(10)),
        "log_exceptions": log_errors(running)[1],
    }
    report("poison messages, healthy database", figures)
    assert len(tally.acked) == 20, figures
    assert drained is not None, figures
    assert book["sold"].get(product_id, 0) + book["left"][product_id] == STOCK
    by_type = {letter["event_type"]: letter for letter in letters}
    assert len(letters) == 2, letters
    assert by_type["<malformed>"]["attempts"] == 1
    assert by_type["order.placed"]["attempts"] == MAX_ATTEMPTS
    assert {letter["consumer"] for letter in letters} == {"products"}
    assert broker_dlq["products"] == 2
