"""`mercato up` starts everything, answers health checks, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from support.processes import SERVICE_PORT_SETTINGS, RunningMercato, mercato_up
from support.servers import free_port

pytestmark = pytest.mark.e2e
SERVICES = ("gateway", "auth", "users", "products", "orders")


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_is_live_and_ready(mercato: RunningMercato, service: str) -> None:
    live = httpx.get(f"{mercato.url(service)}/healthz")
    ready = httpx.get(f"{mercato.url(service)}/readyz")

    assert live.status_code == 200
    assert live.json() == {"status": "ok", "service": service}
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"].values()) == {"ok"}


def test_gateway_readiness_aggregates_every_service(mercato: RunningMercato) -> None:
    checks = httpx.get(f"{mercato.base_url}/readyz").json()["checks"]

    assert {"auth", "users", "products", "orders"} <= set(checks)


def test_request_id_travels_through_the_gateway_into_the_service_logs(
    mercato: RunningMercato,
) -> None:
    request_id = "e2e-trace-0001"
    response = httpx.get(
        f"{mercato.base_url}/api/v1/products/no-such-route/x",
        headers={"X-Request-ID": request_id},
    )

    assert response.headers["x-request-id"] == request_id
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["request_id"] == request_id
    lines = mercato.log_lines_with(request_id, services={"gateway", "products"})
    assert {line["service"] for line in lines} >= {"gateway", "products"}


def test_uvicorn_lines_name_their_service(mercato: RunningMercato) -> None:
    lines = [json.loads(line) for line in mercato.log().splitlines() if line.startswith("{")]
    uvicorn = [line for line in lines if line["logger"].startswith("uvicorn")]

    named = {line["service"] for line in uvicorn}
    # Every service's own; the servers topology also runs the worker, whose /metrics is served
    # by a uvicorn of its own.
    assert set(SERVICES) <= named <= {*SERVICES, "worker"}


def test_an_unreachable_redis_stops_start_up_before_the_banner(tmp_path: Path) -> None:
    redis_port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "BROKER_URL", "MERCATO_CONFIG"}
    } | {
        "DATA_DIR": str(tmp_path / "var"),
        "SECRETS_DIR": str(tmp_path / "no-secrets"),
        "REDIS_URL": f"redis://:hunter2@127.0.0.1:{redis_port}/0",
        "STARTUP_TIMEOUT": "0.5",
        **{setting: str(free_port()) for setting in SERVICE_PORT_SETTINGS.values()},
    }

    done = subprocess.run(
        [sys.executable, "-m", "mercato", "up"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1
    assert "Mercato is up" not in done.stdout
    assert done.stderr.splitlines() == [
        f"mercato: waiting up to 0.5 s for REDIS_URL (127.0.0.1:{redis_port})",
        f"mercato: REDIS_URL (127.0.0.1:{redis_port}) did not answer within 0.5 s"
        " (STARTUP_TIMEOUT)",
    ]
    assert "hunter2" not in done.stdout + done.stderr


@pytest.mark.parametrize("insane", ["two words", "<script>", "x" * 300, "a\\nforged"])
def test_an_insane_request_id_is_replaced(mercato: RunningMercato, insane: str) -> None:
    response = httpx.get(f"{mercato.base_url}/healthz", headers={"X-Request-ID": insane})

    assert response.status_code == 200
    assert response.headers["x-request-id"] != insane
    assert len(response.headers["x-request-id"]) == 32


def test_ctrl_c_stops_everything_with_exit_code_zero(tmp_path: Path) -> None:
    ports = {name: free_port() for name in SERVICES}
    with mercato_up(tmp_path, ports) as running:
        assert httpx.get(f"{running.base_url}/readyz").status_code == 200
        code = running.stop()

    assert code == 0
    for port in ports.values():
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/healthz")


@pytest.mark.integration
def test_up_on_real_postgres_and_redis_says_so_in_readyz(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    ports = {name: free_port() for name in SERVICES}
    env = {"DATABASE_URL": postgres_url, "REDIS_URL": redis_url}
    with mercato_up(tmp_path, ports, env=env) as running:
        services = {name: httpx.get(f"{running.url(name)}/readyz").json() for name in SERVICES}

    for name in ("auth", "users", "products", "orders"):
        assert services[name]["status"] == "ready"
        assert services[name]["backends"]["database"] == "postgresql"
        assert services[name]["backends"]["cache"] == "redis"
    assert services["gateway"]["status"] == "ready"
