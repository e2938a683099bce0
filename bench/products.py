"""How much does the catalogue's cache buy? Product reads measured cold and warm.

For SQLite and for PostgreSQL, the products service is started four times (uvicorn, one
process): cache off ("cold": every read queries the database), then "warm": memory cache,
Redis cache, and Redis with a local memory layer in front (``PRODUCTS_LOCAL_CACHE_TTL``).
Each is loaded with ``GET /products/{id}`` and ``GET /products?limit=20``. The baseline is
the same framework (FastAPI on uvicorn) answering a constant JSON body of the same size: the
fastest a read could be. Servers are pinned to core 1 and wrk to core 0 (``taskset``), wrk
runs 1 thread with 50 connections, scenarios run in interleaved rounds and the median round
is reported, as requests per second and p50/p99 latency, with the warm/cold ratio and each
read's distance from the baseline. Results: ``bench/results/products.json``.

    .venv/bin/python -m bench.products [--duration 2] [--rounds 3] [--no-postgres]

Targets (issue 5): warm >= 3x cold on PostgreSQL; a warm single-product read within 2x of
the constant-JSON baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Response

from bench._servers import Servers, can_pin, free_port, wait_until_answers
from bench._wrk import CONNECTIONS, Run, wrk

RESULTS = Path(__file__).parent / "results"
POSTGRES = os.environ.get("BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")

#: A product-sized constant body for the baseline.
CONSTANT_BODY = json.dumps(
    {
        "id": "0d3c1c8e-5b7a-4a8e-9d43-2f1c8a9b7e61",
        "sku": "ELE-011",
        "name": "Compact Wireless Earbuds",
        "description": "The compact wireless earbuds: clear calls and deep bass on the go.",
        "price": "79.99",
        "currency": "USD",
        "category": "electronics",
        "stock": 42,
        "created_at": "2026-11-30T10:00:00.000000Z",
        "updated_at": "2026-11-30T10:00:00.000000Z",
    },
    separators=(",", ":"),
).encode()


def constant_app() -> FastAPI:
    """The baseline: FastAPI returning a constant JSON body (uvicorn --factory)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/products/{product_id}")
    async def product(product_id: str) -> Response:
        return Response(CONSTANT_BODY, media_type="application/json")

    return app


# --- processes ------------------------------------------------------------------------------


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - local URL
        return json.loads(response.read())


def start(servers: Servers, name: str, factory: str, env: dict[str, str]) -> tuple[str, int]:
    """Serve ``factory`` on a free port until it is ready; its base URL and pid."""
    port = free_port()
    process = servers.uvicorn(factory, port, env, name=name)
    base = f"http://127.0.0.1:{port}"
    ready = f"{base}/readyz" if factory.startswith("mercato") else f"{base}/products/x"
    wait_until_answers(ready, process)
    return base, process.pid  # taskset execs the server: the same pid


# --- databases ------------------------------------------------------------------------------


def _admin_dsn() -> str:
    return POSTGRES.replace("+asyncpg", "").rstrip("/") + "/postgres"


def postgres_available() -> bool:
    import asyncpg

    async def probe() -> bool:
        try:
            connection = await asyncpg.connect(_admin_dsn(), timeout=3)
        except (OSError, asyncpg.PostgresError):
            return False
        await connection.close()
        return True

    return asyncio.run(probe())


def postgres_database(name: str, *, drop: bool = False) -> str:
    import asyncpg

    async def run() -> None:
        connection = await asyncpg.connect(_admin_dsn())
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if not drop:
                await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    asyncio.run(run())
    return f"{POSTGRES.rstrip('/')}/{name}"


def redis_database(index: int) -> str | None:
    import redis

    url = f"{REDIS.rstrip('/')}/{index}"
    try:
        client = redis.Redis.from_url(url, socket_timeout=3)
        client.flushdb()  # a database of the bench's own: no other keys live here
        client.close()
    except redis.RedisError:
        return None
    return url


# --- measuring ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str  # e.g. "postgres/redis"
    database: str  # "sqlite" | "postgres" | "-"
    cache: str  # "off" | "memory" | "redis" | "-"
    endpoint: str  # "product" | "list"
    url: str
    pid: int | None = None


def start_products(
    servers: Servers,
    workdir: Path,
    database: str,
    cache: str,
    database_url: str | None,
    redis_url: str | None,
) -> tuple[str, int]:
    env = {
        "ENVIRONMENT": "development",
        "LOG_LEVEL": "WARNING",
        "ACCESS_LOG": "false",
        "SEED_DEMO_CATALOGUE": "true",
        "DATA_DIR": str(workdir / f"{database}-{cache}"),
        "PRODUCTS_CACHE_ENABLED": "false" if cache == "off" else "true",
    }
    if database_url:
        env["PRODUCTS_DATABASE_URL"] = database_url
    if cache.startswith("redis") and redis_url:
        env["REDIS_URL"] = redis_url
    if cache == "redis+local":
        env["PRODUCTS_LOCAL_CACHE_TTL"] = "60"
    return start(servers, f"products-{database}-{cache}", "mercato.products.app:create_app", env)


def plan(servers: Servers, workdir: Path, use_postgres: bool) -> tuple[list[Scenario], list[str]]:
    scenarios: list[Scenario] = []
    databases: list[str] = []
    base, pid = start(servers, "constant", "bench.products:constant_app", {})
    scenarios.append(Scenario("baseline", "-", "-", "product", f"{base}/products/constant", pid))
    redis_index = 12
    for database in ("sqlite", "postgres"):
        if database == "postgres" and not use_postgres:
            continue
        for cache in ("off", "memory", "redis", "redis+local"):
            database_url = None
            if database == "postgres":
                name = f"mercato_bench_{uuid.uuid4().hex[:10]}"
                database_url = postgres_database(name)
                databases.append(name)
            redis_url = None
            if cache.startswith("redis"):
                redis_url = redis_database(redis_index)
                redis_index += 1
                if redis_url is None:
                    print(f"  skipped {database}/{cache}: Redis is not answering")
                    continue
            url, pid = start_products(servers, workdir, database, cache, database_url, redis_url)
            product_id = get_json(f"{url}/products?limit=1&sort=name")["items"][0]["id"]
            name = f"{database}/{cache}"
            scenarios.append(
                Scenario(name, database, cache, "product", f"{url}/products/{product_id}", pid)
            )
            scenarios.append(
                Scenario(name, database, cache, "list", f"{url}/products?limit=20", pid)
            )
            if database == "sqlite" and cache == "memory":
                # The platform's own cost: a constant JSON body through the same app and
                # middleware (request id, metrics), to tell it apart from the catalogue's.
                scenarios.append(
                    Scenario("app /healthz", "-", "-", "healthz", f"{url}/healthz", pid)
                )
    return scenarios, databases


def summarize(scenarios: list[Scenario], runs: dict[Scenario, list[Run]]) -> list[dict[str, Any]]:
    median = {s: sorted(runs[s], key=lambda run: run.rps)[len(runs[s]) // 2] for s in scenarios}
    baseline = next(median[s] for s in scenarios if s.name == "baseline")
    rows: list[dict[str, Any]] = []
    for scenario in scenarios:
        run = median[scenario]
        cold = next(
            (
                median[s]
                for s in scenarios
                if s.database == scenario.database
                and s.cache == "off"
                and s.endpoint == scenario.endpoint
            ),
            None,
        )
        rows.append(
            {
                "scenario": scenario.name,
                "database": scenario.database,
                "cache": scenario.cache,
                "endpoint": scenario.endpoint,
                **asdict(run),
                "rounds_rps": [round(r.rps) for r in runs[scenario]],
                "warm_over_cold": round(run.rps / cold.rps, 2)
                if cold and scenario.cache not in {"off", "-"}
                else None,
                "baseline_over_this": round(baseline.rps / run.rps, 2),
                "cpu_over_baseline": round(run.cpu_us_per_request / baseline.cpu_us_per_request, 2)
                if run.cpu_us_per_request and baseline.cpu_us_per_request
                else None,
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'scenario':<21} {'endpoint':<8} {'rps':>8} {'p50 ms':>8} {'p99 ms':>8} {'err':>4} "
        f"{'warm/cold':>9} {'base/this':>9} {'cpu us':>7} {'cpu/base':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        warm = f"{row['warm_over_cold']:.2f}x" if row["warm_over_cold"] else "-"
        print(
            f"{row['scenario']:<21} {row['endpoint']:<8} {row['rps']:>8.0f} {row['p50_ms']:>8.2f} "
            f"{row['p99_ms']:>8.2f} {row['errors']:>4} {warm:>9} {row['baseline_over_this']:>8.2f}x"
            f" {row['cpu_us_per_request'] or 0:>7.0f} {row['cpu_over_baseline'] or 0:>7.2f}x"
        )


def verdicts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's two targets, checked against this run."""
    found: dict[str, Any] = {}
    postgres_warm = [
        row["warm_over_cold"]
        for row in rows
        if row["database"] == "postgres" and row["warm_over_cold"]
    ]
    if postgres_warm:
        found["postgres_warm_over_cold_min"] = min(postgres_warm)
        found["postgres_warm_at_least_3x"] = min(postgres_warm) >= 3
    warm_product = [
        row["baseline_over_this"]
        for row in rows
        if row["endpoint"] == "product" and row["cache"] not in {"off", "-"}
    ]
    if warm_product:
        found["warm_product_worst_baseline_ratio"] = max(warm_product)
        found["warm_product_within_2x_of_baseline"] = max(warm_product) <= 2
    warm_cpu = [
        row["cpu_over_baseline"]
        for row in rows
        if row["endpoint"] == "product"
        and row["cache"] not in {"off", "-"}
        and row["cpu_over_baseline"]
    ]
    if warm_cpu:
        found["warm_product_worst_cpu_over_baseline"] = max(warm_cpu)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median kept)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is needed (apt-get install -y wrk); nothing measured")
        return 2
    pin = can_pin()
    use_postgres = not args.no_postgres and postgres_available()
    if not use_postgres:
        print("PostgreSQL is not used (not answering, or --no-postgres)")
    RESULTS.mkdir(exist_ok=True)
    databases: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mercato-bench-products-") as tmp:
        servers = Servers(Path(tmp), pin)
        try:
            scenarios, databases = plan(servers, Path(tmp), use_postgres)
            for scenario in scenarios:  # warm up: connections, caches, JIT-free but lazy imports
                wrk(scenario.url, 1, pin)
            runs: dict[Scenario, list[Run]] = {scenario: [] for scenario in scenarios}
            for round_number in range(args.rounds):
                print(f"round {round_number + 1}/{args.rounds}", flush=True)
                for scenario in scenarios:
                    runs[scenario].append(wrk(scenario.url, args.duration, pin, pid=scenario.pid))
        finally:
            servers.stop()
            for name in databases:
                postgres_database(name, drop=True)
    rows = summarize(scenarios, runs)
    print_table(rows)
    found = verdicts(rows)
    print(json.dumps(found, indent=2))
    result = {
        "benchmark": "products",
        "connections": CONNECTIONS,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "pinned": pin,
        "cpus": os.cpu_count(),
        "rows": rows,
        "targets": found,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (RESULTS / "products.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS / 'products.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
