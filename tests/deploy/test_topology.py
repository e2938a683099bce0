"""The servers topology run for real: nginx (deploy/nginx) in front of two gateway
instances, every backend service under gunicorn with two workers, the notification worker,
on PostgreSQL, Redis and RabbitMQ. The rate limit is one for both gateways, the gateways
believe nginx's X-Forwarded-For (TRUSTED_PROXIES), and the e2e suite passes through nginx."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from support.deploy_topology import TOPOLOGY_VARIABLE, RunningTopology, gunicorn_workers

pytestmark = pytest.mark.deploy

LIMIT = 10
TOPOLOGY_ENV = {"RATE_LIMIT_API": f"{LIMIT}/minute"}
ROOT = Path(__file__).resolve().parents[2]
#: e2e modules that start processes of their own (`mercato up` in other shapes, `mercato
#: serve`, shutdown under load, the production profile): not a topology question.
OWN_PROCESSES = (
    "test_up.py",
    "test_serve.py",
    "test_shutdown_under_load.py",
    "test_production_e2e.py",
)
#: Tests whose premise is that the gateway is the edge: nginx names itself in `Server`
#: (`server_tokens off` hides only its version; removing the header needs a module Debian's
#: nginx does not load).
GATEWAY_AT_THE_EDGE = (
    "tests/e2e/test_gateway_e2e.py::test_every_gateway_answer_carries_the_security_headers",
)
#: Tests that count one gateway's metrics: behind nginx two instances share the requests,
#: and each has its own /metrics (Prometheus scrapes every instance, not nginx).
ONE_GATEWAY = (
    "tests/e2e/test_gateway_e2e.py::test_the_gateway_rows_on_postgres_redis_and_rabbitmq",
)


@pytest.mark.timeout(1500)
def test_the_e2e_suite_passes_through_nginx(nginx: str, tmp_path: Path) -> None:
    """The e2e tier again, each `mercato up` of it replaced by this topology. First in the
    module: the module's own topology is not started yet, so the PostgreSQL server's
    connections go to the ones of the e2e run."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-x",
        "-m",
        "e2e",
        f"--basetemp={tmp_path / 'e2e'}",
        *(f"--ignore=tests/e2e/{name}" for name in OWN_PROCESSES),
        *(f"--deselect={test}" for test in (*GATEWAY_AT_THE_EDGE, *ONE_GATEWAY)),
        "tests/e2e",
    ]
    result = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, TOPOLOGY_VARIABLE: "servers"},
        capture_output=True,
        text=True,
        timeout=1400,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    assert " passed" in output, output[-3000:]


def test_every_process_is_up_behind_nginx(topology: RunningTopology) -> None:
    ready = httpx.get(f"{topology.base_url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) >= {"auth", "users", "products", "orders"}
    assert len(topology.gateways) == 2
    for member in topology.members:
        if member.name != "worker":
            assert len(gunicorn_workers(member.process.pid)) == 2, member.name
    answer = httpx.get(f"{topology.base_url}/api/v1/products", timeout=10)
    assert answer.status_code == 200
    assert answer.json()["total"] >= 120  # development seeds the demo catalogue once


def test_the_rate_limit_is_shared_by_both_gateway_instances(topology: RunningTopology) -> None:
    # The test runs on 127.0.0.1, which the gateways trust as they trust nginx: the
    # X-Forwarded-For it sends names the client, a fresh one for this test.
    client = {"X-Forwarded-For": "203.0.113.10"}
    answers = [
        httpx.get(f"{topology.gateway_urls[n % 2]}/api/v1/products", headers=client, timeout=10)
        for n in range(LIMIT + 2)
    ]
    assert [a.status_code for a in answers] == [200] * LIMIT + [429, 429]
    assert [a.headers["ratelimit-remaining"] for a in answers[:LIMIT]] == [
        str(LIMIT - 1 - n) for n in range(LIMIT)
    ]
    assert "retry-after" in answers[LIMIT].headers
    through_nginx = httpx.get(f"{topology.base_url}/api/v1/products", headers=client, timeout=10)
    assert through_nginx.status_code == 429


def test_the_gateways_believe_the_address_nginx_saw(topology: RunningTopology) -> None:
    # Clients on 127.0.0.2 and 127.0.0.3 (not trusted): each has a limit of its own, and an
    # X-Forwarded-For a client writes itself does not get it a fresh one.
    def client(address: str) -> httpx.Client:
        transport = httpx.HTTPTransport(local_address=address)
        return httpx.Client(base_url=topology.base_url, transport=transport, timeout=10)

    with client("127.0.0.2") as first, client("127.0.0.3") as second:
        firsts = [first.get("/api/v1/products").status_code for _ in range(LIMIT)]
        forged = first.get("/api/v1/products", headers={"X-Forwarded-For": "198.51.100.7"})
        seconds = [second.get("/api/v1/products").status_code for _ in range(LIMIT)]
        metrics = first.get("/metrics")
    assert firsts == [200] * LIMIT
    assert forged.status_code == 429
    assert seconds == [200] * LIMIT
    assert metrics.status_code == 403  # /metrics only for this machine


def test_the_request_id_passes_nginx_both_ways(topology: RunningTopology) -> None:
    request_id = "deploy-topology-0001"
    answer = httpx.get(
        f"{topology.base_url}/api/v1/products/no-such-id",
        headers={"X-Request-ID": request_id, "X-Forwarded-For": "203.0.113.11"},
        timeout=10,
    )
    assert answer.status_code == 404
    assert answer.headers["x-request-id"] == request_id
    assert topology.log_lines_with(request_id, services={"gateway", "products"})
    assert topology.nginx is not None
    access_log = topology.nginx.prefix / "logs" / "access.log"
    # nginx writes the line as it finishes the request, which may be after the client read it.
    deadline = time.monotonic() + 10
    while f"request_id={request_id}" not in access_log.read_text():
        assert time.monotonic() < deadline, access_log.read_text()[-2000:]
        time.sleep(0.1)
