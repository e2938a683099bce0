"""A private PostgreSQL for fault tests: started, crashed and restarted by the test.

It never touches the machine's shared cluster (5432): its own data directory (``initdb``
into a temporary directory owned by the ``postgres`` user), its own free port, listening on
127.0.0.1 only, trust authentication, and its Unix socket in the temporary directory too.
``crash()`` is ``pg_ctl stop -m immediate``: every backend is killed without a checkpoint,
as in a crash, and the next start runs crash recovery.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from support.servers import free_port, missing

SHARED_PORT = 5432


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    return Path(found[-1]) if found and Path(found[-1], "pg_ctl").exists() else None


class PostgresNode:
    """One private PostgreSQL server; ``url()`` is what ``DATABASE_URL`` takes."""

    def __init__(self, *, max_connections: int = 200) -> None:
        bin_dir = _binaries()
        if bin_dir is None or shutil.which("runuser") is None or os.geteuid() != 0:
            missing("a private PostgreSQL needs /usr/lib/postgresql/*/bin, runuser and root")
        self.bin = bin_dir
        self.port = free_port(avoid=SHARED_PORT)
        self.base = Path(tempfile.mkdtemp(prefix="mercato-pg-"))
        self.data = self.base / "data"
        self.sockets = self.base / "run"
        self.sockets.mkdir()
        shutil.chown(self.base, "postgres", "postgres")
        shutil.chown(self.sockets, "postgres", "postgres")
        self.running = False
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        # Appended last, so these win over initdb's defaults. fsync and synchronous_commit
        # stay on: a commit answered before its WAL is written would be lost by the crash
        # and look like a lost order.
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nport = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.sockets}'\n"
                f"max_connections = {max_connections}\n"
                "shared_buffers = 32MB\n"
                "log_min_messages = warning\n"
            )

    def _run(self, tool: str, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bin / tool), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
        output = result.stdout.decode(errors="replace")
        if result.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({result.returncode}):\n{output}")
        return output

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """For asyncpg itself (no SQLAlchemy driver suffix)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def log_path(self) -> Path:
        return self.base / "server.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        """Start (or restart after a crash) and wait until it accepts connections."""
        # pg_ctl's -l keeps the server's output away from our pipes, so this returns.
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "90", "start"
        )
        self.running = True

    def create_database(self, name: str) -> str:
        self._run("createdb", "-h", str(self.sockets), "-p", str(self.port), name)
        return self.url(name)

    def crash(self) -> None:
        """``pg_ctl stop -m immediate``: a crash, no checkpoint, connections cut."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        self.running = False

    def cleanup(self) -> None:
        if self.running:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.crash()
        shutil.rmtree(self.base, ignore_errors=True)
