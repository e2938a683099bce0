"""deploy/gunicorn.conf.py: what gunicorn reads from it, and gunicorn run with it for real
(one service, two workers, metrics summed over both, a killed worker replaced, SIGTERM)."""

from __future__ import annotations

import json
import os
import re
import runpy
import signal
import socket
import sys
import time
import types
from pathlib import Path

import httpx
import pytest
from gunicorn.config import Config

from mercato.gunicorn_app import MercatoUvicornWorker, StructuredGunicornLogger, asgi_app
from mercato.settings import Settings
from support.deploy_container import (
    ROOT,
    children,
    process_env,
    run,
    start,
    stop,
)
from support.processes import answered, log_tail
from support.servers import free_port

CONF = ROOT / "deploy" / "gunicorn.conf.py"


def gunicorn_config(monkeypatch: pytest.MonkeyPatch, **env: str) -> Config:
    """The configuration gunicorn builds from the file, as ``gunicorn -c`` loads it."""
    for name in ("PORT", "HOST", "WEB_CONCURRENCY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    namespace = runpy.run_path(str(CONF))
    config = Config()
    for name, value in namespace.items():
        if name in config.settings:
            config.set(name, value)
    return config


def test_every_name_the_file_sets_is_a_gunicorn_setting() -> None:
    """A misspelt setting (``max_request``) would be ignored by gunicorn without a word."""
    namespace = runpy.run_path(str(CONF))
    known = Config().settings
    ours = {
        name
        for name, value in namespace.items()
        if not name.startswith("_")
        and name.islower()
        and not isinstance(value, types.ModuleType)
        and name not in {"annotations", "Any"}
    }
    assert ours - set(known) == set()
    assert {"on_starting", "child_exit", "worker_class", "max_requests_jitter"} <= ours


def test_workers_follow_the_cpu_count_capped_unless_web_concurrency_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cpus = len(os.sched_getaffinity(0))
    assert gunicorn_config(monkeypatch).workers == min(max(cpus, 2), 8)
    assert gunicorn_config(monkeypatch, WEB_CONCURRENCY="3").workers == 3


def test_bind_is_port_on_host(monkeypatch: pytest.MonkeyPatch) -> None:
    assert gunicorn_config(monkeypatch).bind == ["127.0.0.1:8000"]
    config = gunicorn_config(monkeypatch, HOST="0.0.0.0", PORT="9123")
    assert config.bind == ["0.0.0.0:9123"]


def test_workers_logging_timeouts_and_recycling(monkeypatch: pytest.MonkeyPatch) -> None:
    config = gunicorn_config(monkeypatch)
    defaults = Settings.model_fields
    assert issubclass(config.worker_class, MercatoUvicornWorker)
    assert config.logger_class is StructuredGunicornLogger
    assert config.wsgi_app == 'mercato.gunicorn_app:asgi_app("gateway")'
    # gunicorn gives the workers longer than the app takes to drain and close by itself.
    assert config.graceful_timeout > defaults["graceful_timeout"].default
    assert config.keepalive == defaults["keep_alive_timeout"].default
    assert config.timeout >= 30
    assert config.max_requests > 0
    assert 0 < config.max_requests_jitter < config.max_requests
    assert config.accesslog is None  # Mercato writes the access lines itself
    assert config.control_socket_disable is True
    assert callable(config.child_exit)
    assert callable(config.on_starting)


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition ``text``."""
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _pids_of_metric_files(directory: Path) -> set[int]:
    return {int(m[1]) for f in directory.glob("*.db") if (m := re.search(r"_(\d+)\.db$", f.name))}


@pytest.mark.deploy
@pytest.mark.timeout(180)
def test_gunicorn_with_the_file_serves_one_service_on_two_workers(tmp_path: Path) -> None:
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    env = process_env(
        tmp_path / "data",
        {
            "PORT": str(port),
            "WEB_CONCURRENCY": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "REQUEST_READ_TIMEOUT": "1",
        },
    )
    log = tmp_path / "gunicorn.log"
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    command = [gunicorn, "-c", str(CONF), 'mercato.gunicorn_app:asgi_app("products")']
    process = start(command, cwd=tmp_path, env=env, log=log)
    base = f"http://127.0.0.1:{port}"
    try:
        answered(f"{base}/readyz", process, log)
        workers = _wait_for_workers(process.pid, 2)
        before = httpx.get(f"{base}/metrics").text
        sent = 40
        for _ in range(sent):  # one connection each, so that both workers take some
            assert httpx.get(f"{base}/healthz", headers={"Connection": "close"}).status_code == 200
        after = httpx.get(f"{base}/metrics").text
        labels = {"route": "/healthz", "status": "200", "service": "products"}
        counted = _metric(after, "http_requests_total", **labels) - _metric(
            before, "http_requests_total", **labels
        )
        # Whichever worker answered /metrics, it counts the requests of both.
        assert counted == sent, log_tail(log)
        assert _pids_of_metric_files(metrics_dir / "products") >= workers

        # The workers are the settings' (on_starting): a request not sent within
        # REQUEST_READ_TIMEOUT is cut off with 408, as under mercato serve.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and no end of head
            assert slow.recv(1024).startswith(b"HTTP/1.1 408 ")

        # A worker that dies is replaced (and its metric files marked dead by child_exit).
        killed = min(workers)
        os.kill(killed, signal.SIGKILL)
        replaced = _wait_for_workers(process.pid, 2, without=killed)
        assert killed not in replaced
        assert httpx.get(f"{base}/readyz").status_code == 200
    finally:
        code = stop(process)
    output = log_tail(log, 100_000)
    assert code == 0, output
    assert "Shutting down: Master" in output
    assert "Traceback" not in output
    # One structured access line per request, Mercato's: none of uvicorn's beside it.
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    access_lines = [line for line in lines if line.get("path") == "/healthz"]
    assert len(access_lines) >= sent
    assert {line["logger"] for line in access_lines} == {"mercato.access"}
    assert not [line for line in lines if line.get("logger") == "uvicorn.access"]


def _wait_for_workers(
    master: int, count: int, *, without: int | None = None, within: float = 30
) -> set[int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = children(master) - ({without} if without else set())
        if len(found) == count:
            return found
        time.sleep(0.2)
    raise AssertionError(f"gunicorn has workers {children(master)}, not {count}")


def test_a_wrong_app_is_refused_before_anything_starts(tmp_path: Path) -> None:
    env = process_env(tmp_path / "data", {"PORT": str(free_port())})
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    result = run([gunicorn, "-c", str(CONF), "myapp:app"], cwd=tmp_path, env=env, timeout=60)
    assert result.returncode != 0
    assert 'mercato.gunicorn_app:asgi_app("SERVICE")' in result.stderr


def test_the_app_gunicorn_loads_is_a_service_built_as_mercato_serve_builds_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    app = asgi_app("products")
    assert app.title == "Mercato products service"
    with pytest.raises(ValueError, match="unknown service 'shop'"):
        asgi_app("shop")
