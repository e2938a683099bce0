"""Scenario 2, the front door: one cached ``GET /products/{id}`` four ways.

constant   raw ASGI on uvicorn answering the same JSON: the Python limit
products   the products service directly (SQLite, memory cache, warm)
gateway    through the Mercato gateway (auth offload and rate limiting on)
nginx      through nginx ``proxy_pass`` (keep-alive upstream) to the same service
"""

from __future__ import annotations

import json
import shutil

from bench._harness import Config, Endpoint, Progress, Sample, Target, http_seconds, measure_http
from bench._servers import (
    SERVER_CORE,
    Servers,
    bearer,
    bench_keys,
    free_port,
    nginx_config,
    pinned,
    seed_product,
    wait_until_answers,
)

TITLE = "Front door: cached GET /products/{id} direct, through the gateway, through nginx"
CONCURRENCY = 50
PRIMARY = "rps"
VARIANTS = ("constant", "products", "gateway", "nginx")
TARGETS = [
    Target(
        "gateway-rps",
        "gateway >= 0.8x nginx's throughput",
        "gateway",
        "rps",
        ">=",
        0.8,
        over="nginx",
    ),
    Target(
        "gateway-p50",
        "gateway p50 within 1.5x of nginx's",
        "gateway",
        "p50_ms",
        "<=",
        1.5,
        over="nginx",
    ),
    Target(
        "products-vs-constant",
        "products direct vs the constant-JSON app (info)",
        "products",
        "rps",
        over="constant",
    ),
]


def estimate(config: Config) -> float:
    return 12 + http_seconds(config, len(VARIANTS))


def gateway_env(pem: str, products_base: str) -> dict[str, str]:
    return {
        "LOG_LEVEL": "WARNING",
        "ACCESS_LOG": "false",
        "JWT_PRIVATE_KEYS": pem,
        "ENVIRONMENT": "development",
        "GATEWAY_ROUTES": json.dumps({"products": products_base}),
        "RATE_LIMIT_API": "100000000/minute",
        "RATE_LIMIT_USER": "100000000/minute",
    }


def run(config: Config, progress: Progress) -> list[Sample]:
    progress.begin("front_door", len(VARIANTS) * config.rounds)
    pem, token = bench_keys()
    servers = Servers(config.workdir, config.pin)
    try:
        progress.step("starting constant app, products, gateway, nginx")
        ports = {name: free_port() for name in VARIANTS}
        constant = servers.uvicorn("bench._gateway_apps:constant_app", ports["constant"], {})
        wait_until_answers(f"http://127.0.0.1:{ports['constant']}/", constant)
        products_base = f"http://127.0.0.1:{ports['products']}"
        products = servers.uvicorn(
            "mercato.products.app:create_app",
            ports["products"],
            {
                **gateway_env(pem, products_base),
                "DATA_DIR": str(config.workdir / "front-door"),
                "SEED_DEMO_CATALOGUE": "false",  # nothing else writes while it is measured
            },
        )
        wait_until_answers(f"{products_base}/healthz", products)
        product_id = seed_product(products_base, token)
        if product_id is None:
            raise RuntimeError("the products service did not create the benchmark's product")
        gateway = servers.uvicorn(
            "mercato.gateway.app:create_app", ports["gateway"], gateway_env(pem, products_base)
        )
        wait_until_answers(f"http://127.0.0.1:{ports['gateway']}/healthz", gateway)
        path = f"/products/{product_id}"
        endpoints = {
            "constant": Endpoint(
                f"http://127.0.0.1:{ports['constant']}{path}", pids=(constant.pid,)
            ),
            "products": Endpoint(f"{products_base}{path}", pids=(products.pid,)),
            "gateway": Endpoint(
                f"http://127.0.0.1:{ports['gateway']}/api/v1{path}",
                bearer(token),
                pids=(gateway.pid, products.pid),
            ),
        }
        if shutil.which("nginx"):
            config_file = nginx_config(config.workdir, {ports["nginx"]: ports["products"]})
            nginx = servers.spawn(
                pinned(
                    SERVER_CORE,
                    ["nginx", "-c", str(config_file), "-p", str(config.workdir)],
                    config.pin,
                ),
                {},
                "nginx",
            )
            url = f"http://127.0.0.1:{ports['nginx']}/api/v1{path}"
            wait_until_answers(url, nginx)
            endpoints["nginx"] = Endpoint(url, bearer(token))  # its CPU is in its worker
        else:
            progress.step("nginx is missing: the nginx variant is skipped")
        return measure_http(config, progress, endpoints, connections=CONCURRENCY)
    finally:
        servers.stop()
