"""A private RabbitMQ node for fault tests: started, killed and restarted by the test.

It never touches the machine's shared node: its own node name, ports, data, logs, pid file,
plugins and feature-flags files and config, in a temporary directory owned by the
``rabbitmq`` user (Debian's server drops to that user). Killing it kills the whole process
group (``beam.smp`` included) with SIGKILL: a crash, not a shutdown.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from support.servers import free_port, missing

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            sock.settimeout(2)
            return bool(sock.recv(8))
    except OSError:
        return False


class RabbitNode:
    def __init__(self) -> None:
        if not SERVER.exists() or shutil.which("runuser") is None or os.geteuid() != 0:
            missing("a private RabbitMQ node needs rabbitmq-server, runuser and root")
        self.name = f"fault-{uuid.uuid4().hex[:8]}@localhost"
        self.port, self.dist_port = free_port(), free_port()
        self.base = Path(tempfile.mkdtemp(prefix="mercato-rabbit-"))
        for sub in ("mnesia", "log"):
            (self.base / sub).mkdir()
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        (self.base / "rabbitmq-env.conf").write_text("")
        shutil.chown(self.base, "rabbitmq", "rabbitmq")
        for path in self.base.rglob("*"):
            shutil.chown(path, "rabbitmq", "rabbitmq")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": "/var/lib/rabbitmq",
            "LANG": "C.UTF-8",
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.base / "node.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(self.base / "feature_flags"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def start(self, wait: float = 60.0) -> None:
        env = self._env()
        command = ["runuser", "-u", "rabbitmq", "--", "env", *(f"{k}={v}" for k, v in env.items())]
        with open(self.base / "stdout.log", "ab") as output:
            self.process = subprocess.Popen(
                [*command, str(SERVER)],
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + wait
        while not _answers(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.base / "stdout.log").read_text(errors="replace")[-3000:]
                self.kill()
                raise RuntimeError(f"private RabbitMQ did not start:\n{log}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the node's whole process group (a crash)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None
        deadline = time.monotonic() + 15
        while _answers(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.base, ignore_errors=True)
