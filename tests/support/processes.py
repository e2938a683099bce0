"""Running `mercato up` as a real subprocess for black-box tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

SERVICE_PORT_SETTINGS = {
    "gateway": "PORT",
    "auth": "AUTH_PORT",
    "users": "USERS_PORT",
    "products": "PRODUCTS_PORT",
    "orders": "ORDERS_PORT",
}


def free_ports() -> dict[str, int]:
    """A free port for each process of `mercato up`, by service."""
    from support.servers import free_port

    ports: set[int] = set()
    while len(ports) < len(SERVICE_PORT_SETTINGS):
        ports.add(free_port())
    return dict(zip(SERVICE_PORT_SETTINGS, sorted(ports), strict=True))


@dataclass
class RunningMercato:
    """A `mercato up` process: where each service listens and where its log goes."""

    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    data_dir: Path
    log_path: Path

    @property
    def base_url(self) -> str:
        return self.url("gateway")

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines_with(self, text: str, *, services: set[str], within: float = 10.0) -> list[Any]:
        """The JSON log lines holding ``text``, once lines of every one of ``services`` are
        there: an access line is written after the answer left, so it may come a little
        after the client read it."""
        deadline = time.monotonic() + within
        while True:
            lines = [json.loads(line) for line in self.log().splitlines() if text in line]
            if {line.get("service") for line in lines} >= services or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def stop(self, timeout: float = 30) -> int:
        """Ctrl-C, as a person would; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def answered(
    url: str,
    process: subprocess.Popen[bytes],
    log_path: Path,
    *,
    status: int = 200,
    within: float = 60,
) -> httpx.Response:
    """Poll ``url`` until it answers ``status``; fail with the tail of ``log_path`` when
    ``process`` exits first or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"{process.args!r} exited with {process.returncode}:\n{log_tail(log_path)}"
            )
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == status:
                return response
            last = f"{response.status_code} {response.text[:300]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.2)
    raise AssertionError(f"{url}: {last} after {within} s:\n{log_tail(log_path)}")


def log_tail(log_path: Path, size: int = 4000) -> str:
    return log_path.read_text(errors="replace")[-size:] if log_path.exists() else "(no log)"


@contextmanager
def mercato_up(
    tmp_path: Path,
    ports: Mapping[str, int],
    *,
    env: Mapping[str, str] | None = None,
    ready_timeout: float = 60,
) -> Iterator[RunningMercato]:
    """Start `mercato up` on ``ports`` with its data under ``tmp_path``; stop it after.

    With ``MERCATO_E2E_PROFILE=production`` it runs in the production profile instead, after
    `mercato migrate` (see support.production). With ``MERCATO_E2E_TOPOLOGY=servers`` it is
    the servers topology behind nginx instead (see support.deploy_topology)."""
    from support.deploy_topology import servers_topology, topology_requested
    from support.production import migrate, production_env, production_requested

    if topology_requested():
        with servers_topology(tmp_path, env, ports=ports, ready_timeout=ready_timeout + 60) as up:
            yield up
        return

    data_dir = tmp_path / "var"
    log_path = tmp_path / "mercato.log"
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "BROKER_URL", "MERCATO_CONFIG"}
    }
    environment.update(
        {
            "ENVIRONMENT": "development",
            "DATA_DIR": str(data_dir),
            "LOG_FORMAT": "json",
            "SECRETS_DIR": str(tmp_path / "no-secrets"),
            **{SERVICE_PORT_SETTINGS[name]: str(port) for name, port in ports.items()},
            **(production_env() if production_requested() else {}),
            **(env or {}),
        }
    )
    if environment["ENVIRONMENT"] == "production":
        migrate(tmp_path, environment)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mercato", "up"],
            cwd=tmp_path,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    running = RunningMercato(process, dict(ports), data_dir, log_path)
    try:
        answered(f"{running.base_url}/readyz", process, log_path, within=ready_timeout)
        yield running
    finally:
        running.stop()
