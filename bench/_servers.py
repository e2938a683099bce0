"""The server processes of the HTTP scenarios, and what they need: keys, a seeded product, nginx.

::

    servers = Servers(workdir, pin=can_pin())
    try:
        port = free_port()
        process = servers.uvicorn("mercato.products.app:create_app", port, env)
        wait_until_answers(f"http://127.0.0.1:{port}/readyz", process)
        ...  # load it (bench._wrk)
    finally:
        servers.stop()

Servers run on ``SERVER_CORE`` and the load generator on ``LOAD_CORE`` (``taskset``) when
``pin`` is true, so that the two do not compete for one core. Each process logs to
``{workdir}/{name}.log``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PYTHON = sys.executable
SERVER_CORE, LOAD_CORE = "1", "0"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def can_pin() -> bool:
    """Whether servers and load can have a core each (taskset and at least two cores)."""
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(core: str, command: list[str], pin: bool) -> list[str]:
    return ["taskset", "-c", core, *command] if pin else command


def wait_until_answers(url: str, process: subprocess.Popen[bytes], seconds: float = 60) -> None:
    """Return once ``url`` answers a success; raise if ``process`` exits or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own local URL
                return
        except OSError:  # refused, or an HTTP error status (urllib.error.HTTPError)
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


@dataclass
class Servers:
    """The processes a benchmark started; :meth:`stop` ends them all, newest first."""

    workdir: Path
    pin: bool
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def uvicorn(
        self,
        factory: str,
        port: int,
        env: dict[str, str],
        *,
        name: str | None = None,
        under: list[str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Serve the app ``factory`` builds (``module:function``) on 127.0.0.1:``port``,
        with the options of ``mercato serve``; ``under`` runs uvicorn inside another module
        (``["pyinstrument", "-o", path]``: python -m pyinstrument -o path -m uvicorn ...)."""
        command = [
            PYTHON,
            *(["-m", *under] if under else []),
            "-m",
            "uvicorn",
            "--factory",
            factory,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--no-server-header",
            "--no-proxy-headers",  # as `mercato serve`: TRUSTED_PROXIES decides, not uvicorn
            "--log-level",
            "warning",
        ]
        command = pinned(SERVER_CORE, command, self.pin)
        return self.spawn(command, env, name or factory.split(":")[-1])

    def spawn(self, command: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        """Start ``command`` with ``env`` over this environment, in the repository root, in
        a process group of its own (gunicorn's workers, nginx's worker: stopped with it)."""
        log = (self.workdir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def stop(self) -> None:
        """SIGINT to every process still running (front servers first), then wait for each
        (15 s), then SIGKILL to whatever is left of its process group."""
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=15)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # a worker its master left behind
            process.wait()


# --- keys, seeding, nginx --------------------------------------------------------------


def bench_keys() -> tuple[str, str]:
    """A throw-away signing key (PEM) and a valid access token (one hour)."""
    from mercato.platform.security.keys import KeySet, SigningKey
    from mercato.platform.security.tokens import TokenIssuer

    keys = KeySet([SigningKey.generate()])
    admin = TokenIssuer(keys, issuer="mercato", audience="mercato", ttl=3600)
    return keys.to_pem(), admin.issue("bench-admin", ["admin"]).token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def request(
    url: str, *, method: str = "GET", token: str | None = None, body: Any = None
) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - local URL
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def seed_product(base: str, token: str) -> str | None:
    """Create one product through the products API; its id, or None if that fails."""
    status, _, body = request(
        f"{base}/products",
        method="POST",
        token=token,
        body={"sku": f"BENCH-{os.getpid()}", "name": "Desk lamp", "price": "19.99", "stock": 42},
    )
    if status != 201:
        print(f"  products service did not create a product: {status} {body[:200]!r}")
        return None
    product_id = json.loads(body)["id"]
    for _ in range(2):  # fill the cache
        request(f"{base}/products/{product_id}")
    return str(product_id)


# --- nginx ------------------------------------------------------------------------------


def nginx_config(workdir: Path, routes: dict[int, int]) -> Path:
    """nginx listening on each key of ``routes`` and proxying to the port it maps to."""
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / sub).mkdir(exist_ok=True)
    config = workdir / "nginx.conf"
    config.write_text(
        f"""worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    server_tokens off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
{"".join(_nginx_server(listen, upstream) for listen, upstream in routes.items())}
}}
""",
        encoding="utf-8",
    )
    return config


def _nginx_server(listen: int, upstream: int) -> str:
    return f"""
    upstream up{upstream} {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{listen};
        location /api/v1/ {{
            proxy_pass http://up{upstream}/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
"""
