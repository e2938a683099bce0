"""`mercato serve SERVICE --workers N`: gunicorn with uvicorn workers, metrics summed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from support.processes import wait_ready
from support.servers import free_port

pytestmark = pytest.mark.e2e


def test_two_workers_answer_and_metrics_count_every_request(tmp_path: Path) -> None:
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "BROKER_URL", "PROMETHEUS_MULTIPROC_DIR"}
    } | {"PRODUCTS_PORT": str(port), "DATA_DIR": str(tmp_path / "var"), "LOG_FORMAT": "json"}
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mercato", "serve", "products", "--workers", "2"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log_path, timeout=60)
        with httpx.Client(base_url=url) as client:
            for _ in range(30):
                assert client.get("/healthz", headers={"Connection": "close"}).status_code == 200
            metrics = client.get("/metrics").text
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)

    count = re.search(r'http_requests_total\{[^}]*route="/healthz"[^}]*\} (\d+)', metrics)
    assert count is not None, metrics
    assert int(count.group(1)) == 30
    assert len(list((tmp_path / "var" / "metrics" / "products").glob("counter_*.db"))) == 2
    assert code == 0
