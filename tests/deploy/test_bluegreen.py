"""deploy/bluegreen.py run for real: blue deployed behind nginx, then green, then a rollback
to blue, while a client reads the catalogue through nginx without pause; not one request
fails. Both colours share one PostgreSQL database (expand/contract: docs/deploy.md,
"Expand/contract").
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.deploy_topology import (
    Nginx,
    fresh_database,
    nginx_binary,
    own_redis_database,
    topology_env,
)
from support.servers import TEST_BROKER_URL, free_port, require_server

pytestmark = pytest.mark.deploy

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "bluegreen.py"


def free_port_block(size: int) -> int:
    """The first of ``size`` consecutive ports nobody listens on now."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + size > 65535:
            continue
        held = []
        try:
            for port in range(base, base + size):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()


class Machine:
    """nginx and the blue-green script's options, in ``root``."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.blue, self.green = free_port_block(6), free_port_block(6)
        while abs(self.blue - self.green) < 6:
            self.green = free_port_block(6)
        self.nginx = Nginx(root / "nginx", free_port(), [f"127.0.0.1:{self.blue}"])

    def bluegreen(self, *args: str) -> str:
        prefix = self.nginx.prefix
        command = [
            sys.executable,
            str(SCRIPT),
            *args,
            f"--mercato={Path(sys.executable).with_name('mercato')}",
            f"--state-dir={self.root / 'state'}",
            f"--upstream-file={self.nginx.upstream_file}",
            f"--nginx={nginx_binary()} -p {prefix}/ -c conf/nginx.conf -e logs/error.log",
            f"--nginx-pid={self.nginx.pid_file}",
            f"--blue-port={self.blue}",
            f"--green-port={self.green}",
            "--drain-timeout=30",
        ]
        result = subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=240, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def state(self) -> dict[str, object]:
        state: dict[str, object] = json.loads((self.root / "state" / "state.json").read_text())
        return state

    def kill_everything(self) -> None:
        """What the script started and left running, at the end of the test."""
        state_file = self.root / "state" / "state.json"
        if state_file.exists():
            for entry in json.loads(state_file.read_text())["colours"].values():
                for pid in entry["pids"].values():
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGKILL)
        self.nginx.stop()


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    nginx_binary()
    with fresh_database() as database, own_redis_database() as redis:
        urls = {
            "DATABASE_URL": database,
            "REDIS_URL": redis,
            "BROKER_URL": require_server(TEST_BROKER_URL, 5672, "RabbitMQ"),
        }
        # A client reading without pause stays under both rate limits.
        env = topology_env(tmp_path, urls, {"RATE_LIMIT_API": "100000/minute"})
        machine = Machine(tmp_path, env)
        try:
            machine.nginx.start()
            yield machine
        finally:
            machine.kill_everything()


class Reader(threading.Thread):
    """Reads the catalogue through nginx, one request after another, until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.answers: list[int | str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stopping.is_set():
                try:
                    answer = client.get("/api/v1/products", params={"limit": 5})
                    self.answers.append(answer.status_code)
                except httpx.HTTPError as exc:
                    self.answers.append(repr(exc))
                self.stopping.wait(0.03)  # under nginx's 50 a second for one address


@pytest.mark.timeout(900)
def test_switching_colours_under_load_fails_no_request(machine: Machine) -> None:
    first = machine.bluegreen("deploy")
    assert "upstream is blue" in first
    reader = Reader(machine.nginx.url)
    reader.start()
    try:
        to_green = machine.bluegreen("deploy")
        seen_during_green = len(reader.answers)
        back = machine.bluegreen("rollback")
    finally:
        reader.stopping.set()
        reader.join(60)
    status = machine.bluegreen("status")

    assert "upstream is green" in to_green
    assert "drained" in to_green
    assert "upstream is blue" in back
    failed = [answer for answer in reader.answers if answer != 200]
    assert failed == [], f"{len(failed)} of {len(reader.answers)} failed: {failed[:10]}"
    assert seen_during_green > 20
    assert len(reader.answers) > seen_during_green + 20
    upstreams = (machine.nginx.prefix / "logs" / "access.log").read_text()
    assert f"127.0.0.1:{machine.blue}" in upstreams
    assert f"127.0.0.1:{machine.green}" in upstreams
    assert status.startswith("live: blue")
    green = next(line for line in status.splitlines() if line.startswith("green: "))
    assert "0/6 processes" in green  # drained
    state = machine.state()
    assert (state["live"], state["previous"]) == ("blue", "green")
