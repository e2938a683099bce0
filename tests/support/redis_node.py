"""A private Redis for fault tests: started, killed (SIGKILL) and restarted by the test.

Its own free port on 127.0.0.1, no persistence (``--save "" --appendonly no``), its working
directory in a temporary directory: the machine's shared Redis (6379) is never touched. A
restart is an empty Redis, as after a crash of a cache without persistence.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from support.servers import free_port, missing

SHARED_PORT = 6379


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            sock.settimeout(1)
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisNode:
    def __init__(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            missing("a private Redis needs redis-server")
        self.server = server
        self.port = free_port(avoid=SHARED_PORT)
        self.base = Path(tempfile.mkdtemp(prefix="mercato-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, wait: float = 30.0) -> None:
        with (self.base / "server.log").open("ab") as output:
            self.process = subprocess.Popen(
                [
                    self.server,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.base),
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + wait
        while not _pong(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.base / "server.log").read_text(errors="replace")[-3000:]
                self.kill()
                raise RuntimeError(f"private Redis did not start:\n{log}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: a crash, connections cut."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait(timeout=30)
        self.process = None

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.base, ignore_errors=True)
