"""Scenario 7, scaling: the gateway and the products service each under gunicorn
(``deploy/gunicorn.conf.py``, as `mercato serve SERVICE --workers N` runs it) with 1 and with
2 workers, loaded through the gateway with a cached ``GET /api/v1/products/{id}``. Nothing
is pinned: the workers and wrk share the machine's cores, as a small deployment would.
"""

from __future__ import annotations

import json
import sys

import httpx

from bench._harness import Config, Endpoint, Progress, Sample, Target, http_seconds, measure_http
from bench._servers import Servers, bench_keys, free_port, wait_until_answers

TITLE = "Scaling: gateway and products under gunicorn, 1 and 2 workers (unpinned)"
CONCURRENCY = 50
PRIMARY = "rps"
WORKERS = (1, 2)
TARGETS = [
    Target("speed-up", "speed-up of 2 workers over 1 (info)", "2 workers", "rps", over="1 worker"),
]
NOTES = [
    "Why the speed-up stays under 2x: the machine has two cores and wrk needs a good share "
    "of one, while each request crosses two processes (gateway, then products), so two "
    "workers per service add parallelism only where a core is idle; a multi-core host "
    "would scale further. The speed-up is the share of the second core the workers can use. "
    "Here there is none left: with one worker each, the gateway's process, the products "
    "service's and wrk already keep both cores busy (unpinned), so a second worker per "
    "service only adds processes taking turns on the same cores, and the speed-up is about "
    "1 (a little under: more context switches, colder caches, a longer p99).",
    "`deploy/gunicorn.conf.py` as deployed, except worker recycling (`max_requests` 1000), "
    "turned off: at these rates it restarts a worker every second or so, and a lone worker's "
    "restart pauses the service (a first QUICK run measured 0 requests/s with 1 worker).",
]


def estimate(config: Config) -> float:
    return 60 + http_seconds(config, len(WORKERS))


def start(servers: Servers, workers: int, pem: str) -> Endpoint:
    common = {
        "ENVIRONMENT": "development",
        "LOG_LEVEL": "WARNING",
        "ACCESS_LOG": "false",
        "JWT_PRIVATE_KEYS": pem,
        "DATA_DIR": str(servers.workdir / f"w{workers}"),
        "SEED_DEMO_CATALOGUE": "true",
        "RATE_LIMIT_API": "100000000/minute",
        "RATE_LIMIT_USER": "100000000/minute",
    }
    products_port, gateway_port = free_port(), free_port()
    products_base = f"http://127.0.0.1:{products_port}"
    # Worker recycling off: at these rates max_requests (1000) would restart a worker every
    # second or so, and with one worker each restart is a pause of the whole service.
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py"]
    gunicorn += ["--max-requests", "0", "--graceful-timeout", "3"]  # and a quick stop
    common["WEB_CONCURRENCY"] = str(workers)
    products = servers.spawn(
        [*gunicorn, 'mercato.gunicorn_app:asgi_app("products")'],
        {**common, "PORT": str(products_port)},
        f"products-w{workers}",
    )
    wait_until_answers(f"{products_base}/readyz", products, seconds=120)
    gateway = servers.spawn(
        [*gunicorn, 'mercato.gunicorn_app:asgi_app("gateway")'],
        {**common, "PORT": str(gateway_port),
         "GATEWAY_ROUTES": json.dumps({"products": products_base})},
        f"gateway-w{workers}",
    )  # fmt: skip
    base = f"http://127.0.0.1:{gateway_port}"
    wait_until_answers(f"{base}/readyz", gateway, seconds=120)
    listed = httpx.get(f"{base}/api/v1/products", params={"limit": 1}, timeout=30).json()
    return Endpoint(f"{base}/api/v1/products/{listed['items'][0]['id']}")


def run(config: Config, progress: Progress) -> list[Sample]:
    progress.begin("scaling", len(WORKERS) * config.rounds)
    pem, _ = bench_keys()
    servers = Servers(config.workdir, pin=False)
    try:
        endpoints = {}
        for workers in WORKERS:
            progress.step(f"starting gateway and products with {workers} worker(s) each")
            endpoints[f"{workers} worker{'s' if workers > 1 else ''}"] = start(
                servers, workers, pem
            )
        return measure_http(config, progress, endpoints, connections=CONCURRENCY, pin_load=False)
    finally:
        servers.stop()
