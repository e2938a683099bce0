"""How much does the gateway cost? One cached ``GET /products/{id}``, measured six ways.

    (a) constant   raw ASGI on uvicorn answering the same JSON: the Python limit
    (b) products   the products service directly
    (c) gateway    through the Mercato gateway, auth offload and rate limiting on
    (d) nginx      through nginx ``proxy_pass`` (keep-alive upstream) to the service
    (e) aiohttp    a minimal raw-ASGI proxy on aiohttp   } the HTTP client choice
    (f) httpx      the same proxy on httpx               } (docs/adr/0003)

Every server is pinned to core 1 and wrk to core 0 (``taskset``); wrk runs with 50
connections; each scenario runs in 3 interleaved rounds and the median round is reported,
with ratios to (b) and to (d). Results go to ``bench/results/gateway.json`` and a chart to
``bench/results/gateway.png``. ``--profile`` instead runs the gateway under pyinstrument
while wrk loads it and writes ``bench/results/gateway-profile.txt``.

    .venv/bin/python -m bench.gateway [--duration 5] [--rounds 3] [--profile]

Missing tools are named, not crashed on: without wrk nothing can be measured; without nginx
(d) is skipped; without taskset (or with one core) nothing is pinned.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench._servers import (
    LOAD_CORE,
    SERVER_CORE,
    Servers,
    can_pin,
    free_port,
    pinned,
    wait_until_answers,
)
from bench._wrk import CONNECTIONS, Run, wrk

RESULTS = Path(__file__).parent / "results"


# --- tools ------------------------------------------------------------------------------


def missing_tools() -> dict[str, str]:
    missing = {}
    for tool, why in (
        ("wrk", "the load generator (apt-get install -y wrk)"),
        ("nginx", "scenario (d) (apt-get install -y nginx)"),
        ("taskset", "CPU pinning (util-linux)"),
    ):
        if shutil.which(tool) is None:
            missing[tool] = why
    return missing


# --- keys, tokens, seeding ------------------------------------------------------------------


def bench_keys() -> tuple[str, str]:
    """A throw-away signing key (PEM) and a valid access token (one hour)."""
    from mercato.platform.security.keys import KeySet, SigningKey
    from mercato.platform.security.tokens import TokenIssuer

    keys = KeySet([SigningKey.generate()])
    admin = TokenIssuer(keys, issuer="mercato", audience="mercato", ttl=3600)
    return keys.to_pem(), admin.issue("bench-admin", ["admin"]).token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def request(
    url: str, *, method: str = "GET", token: str | None = None, body: Any = None
) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - local URL
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def seed_product(base: str, token: str) -> str | None:
    """Create one product through the products API; its id, or None if that fails."""
    status, _, body = request(
        f"{base}/products",
        method="POST",
        token=token,
        body={"sku": f"BENCH-{os.getpid()}", "name": "Desk lamp", "price": "19.99", "stock": 42},
    )
    if status != 201:
        print(f"  products service did not create a product: {status} {body[:200]!r}")
        return None
    product_id = json.loads(body)["id"]
    for _ in range(2):  # fill the cache
        request(f"{base}/products/{product_id}")
    return str(product_id)


# --- nginx ------------------------------------------------------------------------------


def nginx_config(workdir: Path, routes: dict[int, int]) -> Path:
    """nginx listening on each key of ``routes`` and proxying to the port it maps to."""
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / sub).mkdir(exist_ok=True)
    config = workdir / "nginx.conf"
    config.write_text(
        f"""worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    server_tokens off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
{"".join(_nginx_server(listen, upstream) for listen, upstream in routes.items())}
}}
""",
        encoding="utf-8",
    )
    return config


def _nginx_server(listen: int, upstream: int) -> str:
    return f"""
    upstream up{upstream} {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{listen};
        location /api/v1/ {{
            proxy_pass http://up{upstream}/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
"""


# --- the benchmark --------------------------------------------------------------------------

SCENARIOS = {
    "constant": "(a) constant-JSON ASGI app",
    "products": "(b) products service directly",
    "gateway": "(c) gateway, auth offload + rate limit",
    "nginx": "(d) nginx proxy_pass",
    "aiohttp": "(e) minimal proxy on aiohttp",
    "httpx": "(f) minimal proxy on httpx",
    "gateway-to-constant": "(g) gateway in front of (a)",
    "nginx-to-constant": "(h) nginx in front of (a)",
}


def start_all(servers: Servers, pem: str, token: str) -> tuple[dict[str, str], dict[str, Any]]:
    """Start every server; the URL of each scenario and notes about the setup."""
    notes: dict[str, Any] = {}
    ports = {name: free_port() for name in SCENARIOS}
    # Access logs off everywhere, as nginx runs with `access_log off`.
    common = {
        "LOG_LEVEL": "WARNING",
        "ACCESS_LOG": "false",
        "JWT_PRIVATE_KEYS": pem,
        "ENVIRONMENT": "development",
    }

    constant = servers.uvicorn("bench._gateway_apps:constant_app", ports["constant"], {})
    wait_until_answers(f"http://127.0.0.1:{ports['constant']}/", constant)

    products_env = {**common, "DATA_DIR": str(servers.workdir / "data")}
    products = servers.uvicorn("mercato.products.app:create_app", ports["products"], products_env)
    products_base = f"http://127.0.0.1:{ports['products']}"
    wait_until_answers(f"{products_base}/healthz", products)
    product_id = seed_product(products_base, token)
    if product_id is None:
        products.send_signal(signal.SIGINT)
        products.wait(timeout=15)
        products = servers.uvicorn(
            "bench._gateway_apps:standin_products", ports["products"], products_env
        )
        wait_until_answers(f"{products_base}/products/x", products)
        product_id = "5f0c6f4e-7c1b-4f55-9b3e-2f2a1c0e9d11"
        notes["products"] = "STAND-IN: a FastAPI 10-field model, not the real products service"
    else:
        notes["products"] = "the real products service (SQLite, memory cache), cache warm"

    gateway_env = {
        **common,
        "GATEWAY_ROUTES": json.dumps({"products": products_base}),
        "RATE_LIMIT_API": "100000000/minute",
        "RATE_LIMIT_USER": "100000000/minute",
    }
    gateway = servers.uvicorn("mercato.gateway.app:create_app", ports["gateway"], gateway_env)
    wait_until_answers(f"http://127.0.0.1:{ports['gateway']}/healthz", gateway)
    constant_env = {
        **gateway_env,
        "GATEWAY_ROUTES": json.dumps({"products": f"http://127.0.0.1:{ports['constant']}"}),
    }
    overhead = servers.uvicorn(
        "mercato.gateway.app:create_app", ports["gateway-to-constant"], constant_env
    )
    wait_until_answers(f"http://127.0.0.1:{ports['gateway-to-constant']}/healthz", overhead)

    for name, factory in (
        ("aiohttp", "bench._gateway_apps:aiohttp_proxy"),
        ("httpx", "bench._gateway_apps:httpx_proxy"),
    ):
        process = servers.uvicorn(factory, ports[name], {"BENCH_UPSTREAM": products_base})
        wait_until_answers(f"http://127.0.0.1:{ports[name]}/api/v1/products/{product_id}", process)

    if shutil.which("nginx"):
        config = nginx_config(
            servers.workdir,
            {ports["nginx"]: ports["products"], ports["nginx-to-constant"]: ports["constant"]},
        )
        nginx = servers.spawn(
            pinned(
                SERVER_CORE, ["nginx", "-c", str(config), "-p", str(servers.workdir)], servers.pin
            ),
            {},
            "nginx",
        )
        wait_until_answers(f"http://127.0.0.1:{ports['nginx']}/api/v1/products/{product_id}", nginx)

    path = f"/products/{product_id}"
    urls = {
        "constant": f"http://127.0.0.1:{ports['constant']}{path}",
        "products": f"{products_base}{path}",
        "gateway": f"http://127.0.0.1:{ports['gateway']}/api/v1{path}",
        "aiohttp": f"http://127.0.0.1:{ports['aiohttp']}/api/v1{path}",
        "httpx": f"http://127.0.0.1:{ports['httpx']}/api/v1{path}",
    }
    urls["gateway-to-constant"] = f"http://127.0.0.1:{ports['gateway-to-constant']}/api/v1{path}"
    if shutil.which("nginx"):
        urls["nginx"] = f"http://127.0.0.1:{ports['nginx']}/api/v1{path}"
        urls["nginx-to-constant"] = f"http://127.0.0.1:{ports['nginx-to-constant']}/api/v1{path}"
    notes["gateway_checks"] = check_gateway(urls["gateway"], token)
    return urls, notes


def check_gateway(url: str, token: str) -> dict[str, Any]:
    """Prove auth offload and rate limiting are on for the measured path."""
    ok_status, ok_headers, _ = request(url, token=token)
    forged_status, _, _ = request(url, token=token[:-4] + "AAAA")
    lowered = {k.lower(): v for k, v in ok_headers.items()}
    checks = {
        "valid_token": ok_status,
        "forged_token": forged_status,
        "ratelimit_limit_header": lowered.get("ratelimit-limit"),
    }
    if ok_status != 200 or forged_status != 401 or "ratelimit-limit" not in lowered:
        raise RuntimeError(f"the gateway is not set up as the benchmark needs: {checks}")
    return checks


def measure(
    urls: dict[str, str], token: str, *, rounds: int, seconds: float, pin: bool
) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {name: [] for name in urls}
    for url in urls.values():  # warm-up: connection pools, caches, lazy imports
        wrk(url, 1, pin, headers=bearer(token))
    for round_number in range(rounds):
        for name, url in urls.items():
            run = wrk(url, seconds, pin, headers=bearer(token))
            runs[name].append(run)
            print(
                f"  round {round_number + 1} {name:9s} {run.rps:9.0f} rps"
                f"  p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:7.2f} ms  errors {run.errors}",
                flush=True,
            )
    return runs


def median_run(runs: list[Run]) -> Run:
    ordered = sorted(runs, key=lambda run: run.rps)
    return ordered[len(ordered) // 2]


def summarize(runs: dict[str, list[Run]]) -> dict[str, dict[str, Any]]:
    medians = {name: median_run(found) for name, found in runs.items()}
    base = medians["products"].rps
    nginx = medians["nginx"].rps if "nginx" in medians else None
    table: dict[str, dict[str, Any]] = {}
    for name, run in medians.items():
        table[name] = {
            "label": SCENARIOS[name],
            **asdict(run),
            "rps_rounds": [round(r.rps) for r in runs[name]],
            "vs_products": round(run.rps / base, 3),
            "vs_nginx": round(run.rps / nginx, 3) if nginx else None,
        }
    return table


def print_table(table: dict[str, dict[str, Any]]) -> None:
    print(f"\n{'scenario':42s} {'rps':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'x(b)':>6s} {'x(d)':>6s}")
    for row in table.values():
        vs_nginx = f"{row['vs_nginx']:.2f}" if row["vs_nginx"] is not None else "-"
        print(
            f"{row['label']:42s} {row['rps']:9.0f} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f}"
            f" {row['vs_products']:6.2f} {vs_nginx:>6s}"
        )


def chart(table: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(table)
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.bar(names, [table[n]["rps"] for n in names], color="#4a7ab5")
    left.set_title(f"requests/s (wrk -c{CONNECTIONS}, median of rounds)")
    for index, name in enumerate(names):
        left.annotate(
            f"{table[name]['rps']:.0f}", (index, table[name]["rps"]), ha="center", va="bottom"
        )
    right.bar(names, [table[n]["p50_ms"] for n in names], label="p50", color="#6aa56a")
    right.bar(names, [table[n]["p99_ms"] for n in names], label="p99", color="#d08a3c", alpha=0.45)
    right.set_title("latency (ms, log scale)")
    right.legend()
    right.set_yscale("log")
    for axis in (left, right):
        axis.set_xticks(range(len(names)), names, rotation=30, ha="right")
    figure.suptitle("GET /products/{id}: direct, through the gateway, through nginx")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def profile(servers: Servers, urls: dict[str, str], pem: str, token: str, seconds: float) -> Path:
    """Run one more gateway under pyinstrument while wrk loads it; write the text report.

    Its upstream is the constant app, so the profile shows the gateway's own costs rather
    than time spent waiting for the products service.
    """
    products_base = urls["constant"].split("/products/")[0]
    port = free_port()
    out = servers.workdir / "gateway-profile-full.txt"
    env = {
        "LOG_LEVEL": "WARNING",
        "ACCESS_LOG": "false",
        "JWT_PRIVATE_KEYS": pem,
        "ENVIRONMENT": "development",
        "GATEWAY_ROUTES": json.dumps({"products": products_base}),
        "RATE_LIMIT_API": "100000000/minute",
        "RATE_LIMIT_USER": "100000000/minute",
    }
    process = servers.uvicorn(
        "mercato.gateway.app:create_app",
        port,
        env,
        name="profiled-gateway",
        under=["pyinstrument", "-r", "text", "--show-all", "-o", str(out)],
    )
    url = urls["gateway"].replace(urls["gateway"].split("/api/")[0], f"http://127.0.0.1:{port}")
    wait_until_answers(f"http://127.0.0.1:{port}/healthz", process)
    run = wrk(url, seconds, servers.pin, headers=bearer(token))
    print(f"  profiled gateway: {run.rps:.0f} rps (profiler overhead included)")
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    compact = RESULTS / "gateway-profile.txt"
    compact.write_text(compact_profile(out.read_text(encoding="utf-8")), encoding="utf-8")
    return compact


_TIMED_LINE = re.compile(r"^[^0-9]*?(\d+\.\d+) ")


def compact_profile(text: str, share: float = 0.01) -> str:
    """The pyinstrument text report without the frames under ``share`` of the total time."""
    lines = text.splitlines()
    total = next((float(m.group(1)) for line in lines if (m := _TIMED_LINE.match(line))), 0.0)
    kept = [
        line
        for line in lines
        if not (m := _TIMED_LINE.match(line)) or float(m.group(1)) >= share * total
    ]
    return "\n".join(kept) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=float, default=float(os.environ.get("BENCH_DURATION", 5))
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="profile the gateway instead")
    parser.add_argument("--only", nargs="*", help="scenarios to measure (default: all)")
    args = parser.parse_args(argv)

    missing = missing_tools()
    for tool, why in missing.items():
        print(f"missing: {tool} - needed for {why}")
    if "wrk" in missing:
        print("cannot measure without wrk; nothing was run")
        return 1
    pin = can_pin()
    if not pin:
        print("not pinning: needs taskset and at least two cores (results are noisier)")

    RESULTS.mkdir(exist_ok=True)
    pem, token = bench_keys()
    with tempfile.TemporaryDirectory(prefix="mercato-bench-gw-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        servers = Servers(workdir, pin)
        try:
            urls, notes = start_all(servers, pem, token)
            if args.profile:
                report = profile(servers, urls, pem, token, max(args.duration, 8))
                print(f"profile written to {report}")
                return 0
            if args.only:
                urls = {
                    name: url
                    for name, url in urls.items()
                    if name in args.only or name == "products"
                }
            runs = measure(urls, token, rounds=args.rounds, seconds=args.duration, pin=pin)
        finally:
            servers.stop()
    table = summarize(runs)
    print_table(table)
    result = {
        "benchmark": "gateway",
        "path": "GET /products/{id} (cached)",
        "connections": CONNECTIONS,
        "rounds": args.rounds,
        "seconds_per_run": args.duration,
        "pinned": {"servers": SERVER_CORE, "wrk": LOAD_CORE} if pin else None,
        "missing_tools": missing,
        "notes": notes,
        "results": table,
    }
    if "gateway" in table and "nginx" in table:
        gateway, nginx = table["gateway"], table["nginx"]
        result["target"] = {
            "gateway_vs_nginx_rps": gateway["vs_nginx"],
            "meets_0_5x_rps": gateway["vs_nginx"] >= 0.5,
            "gateway_p50_vs_nginx_p50": round(gateway["p50_ms"] / nginx["p50_ms"], 3),
            "meets_p50_within_2x": gateway["p50_ms"] <= 2 * nginx["p50_ms"],
        }
        print(f"\ntarget: {result['target']}")
    if "gateway-to-constant" in table and "nginx-to-constant" in table:
        own, reference = table["gateway-to-constant"], table["nginx-to-constant"]
        result["proxy_overhead"] = {
            "gateway_vs_nginx_rps_in_front_of_constant": round(own["rps"] / reference["rps"], 3),
            "gateway_vs_nginx_p50_in_front_of_constant": round(
                own["p50_ms"] / reference["p50_ms"], 3
            ),
        }
        print(f"proxy overhead: {result['proxy_overhead']}")
    (RESULTS / "gateway.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    chart(table, RESULTS / "gateway.png")
    print(f"written: {RESULTS / 'gateway.json'}, {RESULTS / 'gateway.png'}")
    errors = {name: row["errors"] for name, row in table.items() if row["errors"]}
    if errors:
        print(f"WARNING: non-2xx answers or timeouts during the runs: {errors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
