"""Not one of the eight scenarios (``python -m bench http_clients``): the gateway's HTTP
client choice of docs/adr/0003, re-measured. The same minimal raw-ASGI reverse proxy on
aiohttp and on httpx, in front of the products service (a cached ``GET /products/{id}``),
against the service directly.
"""

from __future__ import annotations

from bench._harness import Config, Endpoint, Progress, Sample, Target, http_seconds, measure_http
from bench._servers import Servers, bearer, bench_keys, free_port, seed_product, wait_until_answers
from bench.front_door import gateway_env

TITLE = "HTTP client of the gateway: a minimal proxy on aiohttp and on httpx (docs/adr/0003)"
CONCURRENCY = 50
PRIMARY = "rps"
VARIANTS = ("products", "aiohttp", "httpx")
TARGETS = [
    Target("aiohttp-over-httpx", "aiohttp proxy over httpx proxy (info)", "aiohttp", "rps",
           over="httpx"),
]  # fmt: skip


def estimate(config: Config) -> float:
    return 10 + http_seconds(config, len(VARIANTS))


def run(config: Config, progress: Progress) -> list[Sample]:
    progress.begin("http_clients", len(VARIANTS) * config.rounds)
    pem, token = bench_keys()
    servers = Servers(config.workdir, config.pin)
    try:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {**gateway_env(pem, base), "DATA_DIR": str(config.workdir / "data")}
        products = servers.uvicorn("mercato.products.app:create_app", port, env)
        wait_until_answers(f"{base}/healthz", products)
        product_id = seed_product(base, token)
        if product_id is None:
            raise RuntimeError("the products service did not create the benchmark's product")
        path = f"/products/{product_id}"
        endpoints = {"products": Endpoint(f"{base}{path}", pids=(products.pid,))}
        for name in VARIANTS[1:]:
            proxy_port = free_port()
            proxy = servers.uvicorn(
                f"bench._gateway_apps:{name}_proxy", proxy_port, {"BENCH_UPSTREAM": base}
            )
            url = f"http://127.0.0.1:{proxy_port}/api/v1{path}"
            wait_until_answers(url, proxy)
            endpoints[name] = Endpoint(url, bearer(token), pids=(proxy.pid,))
        return measure_http(config, progress, endpoints, connections=CONCURRENCY)
    finally:
        servers.stop()
