"""Scenario 1, against a peer stack: an authenticated read of one's own resource.

- ``peer``: bench/peers/items.py (FastAPI + SQLModel + psycopg 3 sync, HS256 PyJWT, one
  uvicorn worker), ``GET /items/{id}`` with a bearer token, on a scratch PostgreSQL database;
- ``gateway``: Mercato's ``GET /api/v1/orders/{id}`` through the gateway of ``mercato up``
  on PostgreSQL, Redis and RabbitMQ;
- ``direct``: the same read straight from the orders service.

Both stacks run on the servers' core, wrk on the load core.
"""

from __future__ import annotations

import secrets
from contextlib import ExitStack

from bench._harness import Config, Endpoint, Progress, Sample, Target, http_seconds, measure_http
from bench._servers import Servers, bearer, free_port, wait_until_answers
from bench._stack import mercato, mercato_pids, scratch_database, seed, servers_answer

TITLE = "Against a peer stack: authenticated GET of one's own order vs FastAPI + SQLModel"
CONCURRENCY = 50
PRIMARY = "rps"
VARIANTS = ("peer", "gateway", "direct")
TARGETS = [
    Target(
        "gateway-vs-peer",
        "through the gateway >= 5x the peer stack",
        "gateway",
        "rps",
        ">=",
        5.0,
        over="peer",
    ),
    Target(
        "direct-vs-peer",
        "orders service direct >= 8x the peer stack",
        "direct",
        "rps",
        ">=",
        8.0,
        over="peer",
    ),
]


def estimate(config: Config) -> float:
    return 25 + http_seconds(config, len(VARIANTS))


def run(config: Config, progress: Progress) -> list[Sample]:
    from bench.peers.items import OWNER, token_for

    progress.begin("peer", len(VARIANTS) * config.rounds)
    if not servers_answer():
        raise RuntimeError("PostgreSQL, Redis and RabbitMQ must answer on 127.0.0.1")
    servers = Servers(config.workdir, config.pin)
    with ExitStack() as stack:
        stack.callback(servers.stop)
        progress.step("starting mercato up (PostgreSQL, Redis, RabbitMQ) and the peer stack")
        secret = secrets.token_hex(32)
        url = stack.enter_context(scratch_database("bench_peer"))
        port = free_port()
        peer = servers.uvicorn(
            "bench.peers.items:create_app",
            port,
            {"PEER_DATABASE_URL": url.replace("+asyncpg", "+psycopg"), "PEER_SECRET": secret},
            name="peer",
        )
        up = stack.enter_context(mercato(config, "peer", servers=True))
        progress.step("seeding an order")
        seeded = seed(up)
        wait_until_answers(f"http://127.0.0.1:{port}/docs", peer, seconds=120)
        import httpx

        peer_token = token_for(OWNER, secret)
        pids = tuple(mercato_pids(up))  # its CPU time: every service's, as in the peer's
        item = httpx.get(f"http://127.0.0.1:{port}/items", headers=bearer(peer_token)).json()[0]
        endpoints = {
            "peer": Endpoint(
                f"http://127.0.0.1:{port}/items/{item['id']}", bearer(peer_token), pids=(peer.pid,)
            ),
            "gateway": Endpoint(
                f"{up.base_url}/api/v1/orders/{seeded.order_id}", bearer(seeded.token), pids
            ),
            "direct": Endpoint(
                f"{up.url('orders')}/orders/{seeded.order_id}", bearer(seeded.token), pids
            ),
        }
        for name, endpoint in endpoints.items():
            answer = httpx.get(endpoint.url, headers=dict(endpoint.headers))
            if answer.status_code != 200:
                raise RuntimeError(f"{name}: {endpoint.url} answered {answer.status_code}")
        return measure_http(config, progress, endpoints, connections=CONCURRENCY)
    raise AssertionError("unreachable")
