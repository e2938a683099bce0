"""Scenario 3, the catalogue: a single product and a 20-item list, cache off ("cold":
every read queries the database) and on ("warm": memory, Redis), on SQLite and PostgreSQL
(a scratch database), against a constant-JSON baseline of the same framework and size.

Each products service (``uvicorn``, one process, the demo catalogue seeded) runs on the
servers' core; they all start first, then every variant is measured in interleaved rounds.
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import ExitStack
from pathlib import Path

from fastapi import FastAPI, Response

from bench._harness import Config, Endpoint, Progress, Sample, Target, http_seconds, measure_http
from bench._servers import Servers, free_port, wait_until_answers
from bench._stack import BENCH_REDIS_URL, postgres_answers, scratch_database

TITLE = "Catalogue: cold and warm reads, memory and Redis caches, SQLite and PostgreSQL"
CONCURRENCY = 50
PRIMARY = "rps"
CACHES = ("off", "memory", "redis")
NOTES = ["Each measurement lasts at most 3 s here (13 variants), the other scenarios' 5 s."]
DATABASES = ("sqlite", "postgres")
TARGETS = [
    *(
        Target(
            f"pg-{cache}-{endpoint}",
            f"PostgreSQL {endpoint}: warm ({cache}) >= 5x cold",
            f"postgres/{cache} {endpoint}",
            "rps",
            ">=",
            5.0,
            over=f"postgres/off {endpoint}",
        )
        for cache in ("memory", "redis")
        for endpoint in ("product", "list")
    ),
    *(
        Target(
            f"{database}-redis-vs-baseline",
            f"{database} warm Redis product read within 2x of constant JSON (rps ratio >= 0.5)",
            f"{database}/redis product",
            "rps",
            ">=",
            0.5,
            over="baseline",
        )
        for database in DATABASES
    ),
]

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


#: Thirteen variants: shorter measurements than the other scenarios' keep the full run
#: within its 15 minutes (the rounds and the warm-up stay).
SECONDS = 3.0


def shortened(config: Config) -> Config:
    return dataclasses.replace(config, seconds=min(config.seconds, SECONDS))


def variants_count() -> int:
    return 1 + len(CACHES) * len(DATABASES) * 2


def estimate(config: Config) -> float:
    return 45 + http_seconds(shortened(config), variants_count())  # 6 services start


def products_env(workdir: Path, database: str, cache: str, url: str | None) -> dict[str, str]:
    env = {
        "ENVIRONMENT": "development",
        "LOG_LEVEL": "WARNING",
        "ACCESS_LOG": "false",
        "SEED_DEMO_CATALOGUE": "true",
        "DATA_DIR": str(workdir / f"{database}-{cache}"),
        "PRODUCTS_CACHE_ENABLED": "false" if cache == "off" else "true",
    }
    if url:
        env["PRODUCTS_DATABASE_URL"] = url
    if cache == "redis":
        env["REDIS_URL"] = BENCH_REDIS_URL
    return env


def run(config: Config, progress: Progress) -> list[Sample]:
    import httpx

    progress.begin("catalogue", variants_count() * config.rounds)
    databases = DATABASES if postgres_answers() else ("sqlite",)
    if len(databases) == 1:
        progress.step("PostgreSQL is not answering: SQLite only")
    servers = Servers(config.workdir, config.pin)
    stack = ExitStack()  # the scratch databases, dropped after the servers stopped
    try:
        progress.step(f"starting {len(databases) * len(CACHES)} products services")
        port = free_port()
        constant = servers.uvicorn("bench.catalogue:constant_app", port, {}, name="constant")
        started = []
        for database in databases:
            for cache in CACHES:
                url = (
                    stack.enter_context(scratch_database("bench_catalogue"))
                    if database == "postgres"
                    else None
                )
                port_ = free_port()
                process = servers.uvicorn(
                    "mercato.products.app:create_app",
                    port_,
                    products_env(config.workdir, database, cache, url),
                    name=f"products-{database}-{cache}",
                )
                started.append((f"{database}/{cache}", f"http://127.0.0.1:{port_}", process))
        wait_until_answers(f"http://127.0.0.1:{port}/products/x", constant, seconds=120)
        endpoints = {
            "baseline": Endpoint(f"http://127.0.0.1:{port}/products/constant", pids=(constant.pid,))
        }
        for name, base, process in started:
            wait_until_answers(f"{base}/readyz", process, seconds=120)
            first = httpx.get(f"{base}/products", params={"limit": 1, "sort": "name"}).json()
            pids = (process.pid,)
            product = first["items"][0]["id"]
            endpoints[f"{name} product"] = Endpoint(f"{base}/products/{product}", pids=pids)
            endpoints[f"{name} list"] = Endpoint(f"{base}/products?limit=20", pids=pids)
        return measure_http(shortened(config), progress, endpoints, connections=CONCURRENCY)
    finally:
        servers.stop()
        stack.close()
