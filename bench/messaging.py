"""Events through outbox -> broker -> consumer: throughput and publish-to-consume latency.

Backends: the memory broker and RabbitMQ (the machine's server, on a private exchange that
is deleted afterwards), both with file SQLite databases (producer and consumer each their
own), and RabbitMQ with PostgreSQL when it answers. A minimal handler records each event
(one insert, plus the inbox row, in one transaction).

- throughput: ``EVENTS`` events committed ``PER_TX`` per transaction as fast as possible;
  events per second from the first commit to the last handled event; median of ``RUNS``;
- ceiling: how many bare write transactions per second (a select and an insert, the shape
  of a consumer's inbox check and effect) this machine's SQLite does, for scale;
- latency: ``PROBES`` events committed one per transaction, ``GAP`` seconds apart; from the
  envelope's ``occurred_at`` (set at publish) to the start of the handler: p50 / p99.

    .venv/bin/python -m bench.messaging     # about a minute; JSON in bench/results/messaging.json
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
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fastapi import FastAPI  # noqa: E402

from mercato.messaging import (  # noqa: E402
    MESSAGING_MIGRATIONS,
    Broker,
    Envelope,
    Handlers,
    Outbox,
    SharedMessaging,
    in_process_broker,
    messaging_hook,
)
from mercato.platform.app import create_service_app  # noqa: E402
from mercato.platform.db import UnitOfWork  # noqa: E402
from mercato.platform.logging import configure_logging  # noqa: E402
from mercato.settings import Settings, load_settings  # noqa: E402
from support.messaging_apps import ThingHappened, delete_rabbit_topology  # noqa: E402
from support.servers import TEST_BROKER_URL, TEST_DATABASE_URL, _answers  # noqa: E402

EVENTS = int(os.environ.get("BENCH_EVENTS", "1000"))
PER_TX = int(os.environ.get("BENCH_PER_TX", "20"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
PROBES = int(os.environ.get("BENCH_PROBES", "200"))
GAP = float(os.environ.get("BENCH_GAP", "0.005"))
RESULTS = ROOT / "bench" / "results" / "messaging.json"


class Recorder:
    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.done = asyncio.Event()
        self.latencies: list[float] = []

    def expect(self, target: int) -> None:
        self.count, self.target = 0, target
        self.latencies = []
        self.done.clear()


def consumer_app(settings: Settings, recorder: Recorder, broker: Broker | None) -> FastAPI:
    handlers = Handlers("products")

    @handlers.on(ThingHappened)
    async def record(event: Envelope[ThingHappened], uow: UnitOfWork) -> None:
        recorder.latencies.append((datetime.now(UTC) - event.occurred_at).total_seconds())
        recorder.count += 1
        if recorder.count >= recorder.target:
            recorder.done.set()

    return create_service_app(
        settings,
        "products",
        title="bench consumer",
        migrations=[MESSAGING_MIGRATIONS],
        hooks=[messaging_hook(Outbox("products"), handlers, SharedMessaging(broker=broker))],
    )


def producer_app(settings: Settings, broker: Broker | None) -> FastAPI:
    return create_service_app(
        settings,
        "orders",
        title="bench producer",
        migrations=[MESSAGING_MIGRATIONS],
        hooks=[messaging_hook(Outbox("orders"), shared=SharedMessaging(broker=broker))],
    )


async def commit_events(app: FastAPI, total: int, per_tx: int, gap: float = 0.0) -> None:
    database, outbox = app.state.context.db, app.state.messaging.outbox
    n = 0
    while n < total:
        async with database.unit_of_work() as uow:
            for _ in range(min(per_tx, total - n)):
                await outbox.publish(uow, ThingHappened(n=n), key=str(n))
                n += 1
            await uow.commit()
        if gap:
            await asyncio.sleep(gap)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def scenario(name: str, settings: Settings) -> dict[str, Any]:
    recorder = Recorder()
    broker = in_process_broker(settings)  # memory: the two apps share it
    producer, consumer = producer_app(settings, broker), consumer_app(settings, recorder, broker)
    rates: list[float] = []
    async with AsyncExitStack() as stack:
        for app in (consumer, producer):
            await stack.enter_async_context(app.router.lifespan_context(app))
        recorder.expect(200)  # warm-up
        await commit_events(producer, 200, PER_TX)
        await asyncio.wait_for(recorder.done.wait(), 120)
        for _ in range(RUNS):
            recorder.expect(EVENTS)
            started = time.perf_counter()
            await commit_events(producer, EVENTS, PER_TX)
            await asyncio.wait_for(recorder.done.wait(), 300)
            rates.append(EVENTS / (time.perf_counter() - started))
        recorder.expect(PROBES)
        await commit_events(producer, PROBES, 1, gap=GAP)
        await asyncio.wait_for(recorder.done.wait(), 120)
        latencies = list(recorder.latencies)
    result = {
        "scenario": name,
        "events_per_second_median": round(statistics.median(rates), 1),
        "events_per_second_runs": [round(rate, 1) for rate in rates],
        "latency_p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
    }
    print(f"  {name}: {result}", flush=True)
    return result


async def sqlite_ceiling(directory: str, count: int = 500) -> float:
    """Bare write transactions per second on a file SQLite (select + insert + commit)."""
    from sqlalchemy import text

    from mercato.platform.db import Database

    database = Database(f"sqlite+aiosqlite:///{directory}/ceiling.db")
    async with database.engine.begin() as connection:
        await connection.execute(text("CREATE TABLE t (x INTEGER)"))
    started = time.perf_counter()
    for n in range(count):
        async with database.unit_of_work() as uow:
            await uow.session.execute(text("SELECT 1 FROM t WHERE x = :x"), {"x": n})
            await uow.session.execute(text("INSERT INTO t VALUES (:x)"), {"x": n})
            await uow.commit()
    rate = count / (time.perf_counter() - started)
    await database.dispose()
    return rate


async def postgres_database() -> tuple[str, Any]:
    import asyncpg

    base = TEST_DATABASE_URL.replace("+asyncpg", "")
    admin = base.rsplit("/", 1)[0] + "/postgres"
    name = f"mercato_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()

    return TEST_DATABASE_URL.rsplit("/", 1)[0] + f"/{name}", drop


async def main() -> int:
    configure_logging(service="bench", level="WARNING", fmt="console")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:

        def settings(label: str, **extra: Any) -> Settings:
            return load_settings(
                env_file=None,
                environment="production",
                secret_key="x" * 40,
                allowed_hosts=["localhost"],
                auto_migrate=True,
                access_log=False,
                orders_database_url=f"sqlite+aiosqlite:///{tmp}/{label}-orders.db",
                products_database_url=f"sqlite+aiosqlite:///{tmp}/{label}-products.db",
                **extra,
            )

        ceiling = await sqlite_ceiling(tmp)
        print(f"  SQLite write transactions per second (ceiling): {ceiling:.0f}", flush=True)
        results.append(await scenario("memory + SQLite", settings("memory")))
        results.append(
            await scenario("memory + SQLite, prefetch 1", settings("memory1", messaging_prefetch=1))
        )
        if _answers(TEST_BROKER_URL, 5672):
            rabbit = settings(
                "rabbit",
                broker_url=TEST_BROKER_URL,
                messaging_exchange=f"bench-{uuid.uuid4().hex[:8]}",
            )
            try:
                results.append(await scenario("RabbitMQ + SQLite", rabbit))
            finally:
                await delete_rabbit_topology(rabbit, ["products"])
            if _answers(TEST_DATABASE_URL, 5432):
                url, drop = await postgres_database()
                pg = rabbit.model_copy(
                    update={
                        "database_url": url,
                        "orders_database_url": None,
                        "products_database_url": None,
                        "messaging_exchange": f"bench-{uuid.uuid4().hex[:8]}",
                    }
                )
                try:
                    results.append(await scenario("RabbitMQ + PostgreSQL", pg))
                finally:
                    await delete_rabbit_topology(pg, ["products"])
                    await drop()
        else:
            print("  RabbitMQ is not answering: memory only")
    base = results[0]
    print(f"\n{EVENTS} events x {RUNS} runs, {PER_TX} per transaction; latency over {PROBES}")
    print(f"SQLite ceiling: {ceiling:.0f} write transactions/s on this machine")
    width = max(len(row["scenario"]) for row in results) + 2
    header = f"{'scenario':<{width}}{'events/s':>10}{'vs memory':>11}{'vs ceiling':>12}"
    print(f"{header}{'p50 ms':>9}{'p99 ms':>9}")
    for row in results:
        ratio = row["events_per_second_median"] / base["events_per_second_median"]
        row["throughput_vs_memory"] = round(ratio, 2)
        row["throughput_vs_sqlite_ceiling"] = round(row["events_per_second_median"] / ceiling, 2)
        print(
            f"{row['scenario']:<{width}}{row['events_per_second_median']:>10.0f}{ratio:>11.2f}"
            f"{row['throughput_vs_sqlite_ceiling']:>12.2f}"
            f"{row['latency_p50_ms']:>9.2f}{row['latency_p99_ms']:>9.2f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "events": EVENTS,
                "per_transaction": PER_TX,
                "runs": RUNS,
                "probes": PROBES,
                "probe_gap_s": GAP,
                "sqlite_write_transactions_per_second": round(ceiling, 1),
                "cpus": os.cpu_count(),
                "load_average_1m": round(os.getloadavg()[0], 2),
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
