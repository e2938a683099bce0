"""`mercato serve SERVICE --workers 2` under gunicorn: a worker killed outright (SIGKILL, as
the kernel's OOM killer would) is replaced by the arbiter, and the service answers all along
from the other worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from support.deploy_topology import gunicorn_workers, stop_process
from support.processes import answered
from support.servers import free_port

pytestmark = pytest.mark.deploy


def test_a_killed_worker_is_replaced_and_the_service_keeps_answering(tmp_path: Path) -> None:
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "BROKER_URL", "PROMETHEUS_MULTIPROC_DIR"}
    }
    env |= {
        "DATA_DIR": str(tmp_path / "var"),
        "HOME": str(tmp_path / "home"),
        "SECRETS_DIR": str(tmp_path / "no-secrets"),
        "LOG_FORMAT": "json",
        "PRODUCTS_PORT": str(port),
    }
    log_path = tmp_path / "products.log"
    with log_path.open("wb") as log:
        master = subprocess.Popen(
            [sys.executable, "-m", "mercato", "serve", "products", "--workers", "2"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        answered(f"{url}/readyz", master, log_path)
        workers = gunicorn_workers(master.pid)
        assert len(workers) == 2

        def read() -> int:
            # A connection of its own each time: a kept-alive one could be the dead worker's.
            return httpx.get(f"{url}/products", params={"limit": 5}, timeout=10).status_code

        before = [read() for _ in range(10)]
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        during = []
        deadline = time.monotonic() + 30
        while len(gunicorn_workers(master.pid) - {victim}) < 2 and time.monotonic() < deadline:
            during.append(read())
        after = [read() for _ in range(10)]
        replaced = gunicorn_workers(master.pid)

        assert before == [200] * 10
        assert set(during) <= {200}
        assert after == [200] * 10
        assert len(replaced) == 2
        assert victim not in replaced
        assert len(replaced & workers) == 1  # the other worker served on meanwhile
        assert master.poll() is None
        assert f"Worker (pid:{victim})" in log_path.read_text()
    finally:
        stop_process(master, signal.SIGTERM, timeout=30)
