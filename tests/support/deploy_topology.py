"""The "servers" topology run for real: nginx (deploy/nginx, non-daemon, its own prefix under
tmp, on a free port) in front of two gateway instances, each backend service under gunicorn
with two workers, and the notification worker, on PostgreSQL, Redis and RabbitMQ.

Each topology gets a fresh PostgreSQL database, a Redis database of its own (the caches are
keyed by service, not by test) and its own RabbitMQ exchange (queue names derive from it), so
it disturbs no other test. ``MERCATO_E2E_TOPOLOGY=servers`` makes the e2e tier's
`mercato up` (support.processes.mercato_up) start one of these instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from mercato.platform.security.keys import KeySet, SigningKey
from support.processes import SERVICE_PORT_SETTINGS, RunningMercato
from support.servers import (
    TEST_BROKER_URL,
    TEST_DATABASE_URL,
    TEST_REDIS_URL,
    free_port,
    fresh_postgres_database,
    missing,
    require_server,
)

NGINX_DIR = Path(__file__).resolve().parents[2] / "deploy" / "nginx"
TOPOLOGY_VARIABLE = "MERCATO_E2E_TOPOLOGY"
BACKENDS = ("auth", "users", "products", "orders")
#: The line of deploy/nginx/mercato.conf a test replaces with its own free port.
LISTEN_LINE = "listen 80 default_server;"
#: Redis databases the topologies take turns on (the shared tests use 0 and 10).
REDIS_DATABASES = range(11, 16)
_AS_ROOT = " user root;" if os.geteuid() == 0 else ""


def topology_requested() -> bool:
    return os.environ.get(TOPOLOGY_VARIABLE, "").lower() == "servers"


def nginx_binary() -> str:
    """Debian's nginx, or a skip (a failure under CI) naming what is missing."""
    found = shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(path).exists()),
        None,
    )
    if found is None:
        missing("nginx is not installed (apt-get install nginx)")
    return found


def upstream_lines(addresses: Sequence[str]) -> str:
    return "".join(f"server {address};\n" for address in addresses)


@dataclass
class Nginx:
    """nginx on deploy/nginx's configuration, copied into ``prefix``/conf with the listen
    line on ``port`` and the upstream include naming ``upstreams``."""

    prefix: Path
    port: int
    upstreams: Sequence[str]
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def upstream_file(self) -> Path:
        return self.prefix / "conf" / "upstream.conf"

    @property
    def pid_file(self) -> Path:
        return self.prefix / "logs" / "nginx.pid"

    def command(self, *extra: str) -> list[str]:
        return [nginx_binary(), "-p", f"{self.prefix}/", "-c", "conf/nginx.conf", *extra]

    def render(self) -> None:
        conf = self.prefix / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (self.prefix / "logs").mkdir(exist_ok=True)
        for source in NGINX_DIR.glob("*.conf"):
            text = source.read_text()
            if LISTEN_LINE in text:
                text = text.replace(LISTEN_LINE, f"listen 127.0.0.1:{self.port} default_server;")
            (conf / source.name).write_text(text)
        self.upstream_file.write_text(upstream_lines(self.upstreams))

    def start(self, timeout: float = 10) -> None:
        self.render()
        log = (self.prefix / "logs" / "stderr.log").open("wb")
        self.process = subprocess.Popen(
            # As root, nginx's workers would be nobody's, who cannot enter pytest's
            # temporary directories (0700).
            self.command("-e", "logs/error.log", "-g", "daemon off;" + _AS_ROOT),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self.pid_file.exists() or not _listening(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start:\n{self.error_log()}")
            time.sleep(0.05)

    def error_log(self) -> str:
        parts = [self.prefix / "logs" / name for name in ("stderr.log", "error.log")]
        return "\n".join(p.read_text(errors="replace") for p in parts if p.exists())[-4000:]

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, signal.SIGQUIT, timeout=10)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop_process(process: subprocess.Popen[bytes], sig: int, *, timeout: float) -> None:
    """``sig`` to ``process`` (started in a session of its own), then SIGKILL to its whole
    process group if it has not exited within ``timeout``: no orphan outlives a test."""
    if process.poll() is None:
        process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@dataclass
class MercatoProcess:
    """One `mercato serve` or `mercato worker` process and its log."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_mercato(
    name: str, args: Sequence[str], env: Mapping[str, str], url: str, logs: Path
) -> MercatoProcess:
    log_path = logs / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mercato", *args],
            env=dict(env),
            cwd=logs,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return MercatoProcess(name, process, url, log_path)


def wait_ready(processes: Sequence[MercatoProcess], timeout: float) -> None:
    """Until every one of ``processes`` answers /readyz with 200; raises with the log of
    the first that does not (or exited)."""
    deadline = time.monotonic() + timeout
    waiting = list(processes)
    last = "no answer"
    while waiting:
        current = waiting[0]
        if current.process.poll() is not None:
            raise RuntimeError(f"{current.name} exited:\n{current.log()[-4000:]}")
        try:
            answer = httpx.get(f"{current.url}/readyz", timeout=2)
            if answer.status_code == 200:
                waiting.pop(0)
                continue
            last = f"{answer.status_code} {answer.text}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{current.name} not ready ({last}):\n{current.log()[-4000:]}")
        time.sleep(0.2)


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new PostgreSQL database on the test server, dropped (forcibly) afterwards."""
    server = require_server(TEST_DATABASE_URL, 5432, "PostgreSQL")
    with fresh_postgres_database(server, prefix="mercato_deploy") as url:
        yield url


@contextlib.contextmanager
def own_redis_database(timeout: float = 120) -> Iterator[str]:
    """A Redis database (11..15) no other topology on this machine uses meanwhile (a file
    lock per database), emptied first."""
    from redis import Redis

    server = require_server(TEST_REDIS_URL, 6379, "Redis").rsplit("/", 1)[0]
    deadline = time.monotonic() + timeout
    while True:
        for number in REDIS_DATABASES:
            with Path(f"/tmp/mercato-deploy-redis-{number}.lock").open("w") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                url = f"{server}/{number}"
                client = Redis.from_url(url)
                client.flushdb()
                client.close()
                yield url
                return
        if time.monotonic() > deadline:
            raise RuntimeError("every Redis database of the deploy tests is taken")
        time.sleep(0.5)


def _merged_networks(*values: str | None) -> str:
    return ",".join(part for value in values if value for part in value.split(",") if part)


@dataclass
class RunningTopology(RunningMercato):
    """The topology, seen as a `mercato up` is (base_url is nginx's): what the e2e tests use,
    plus the gateway instances and every process."""

    nginx: Nginx | None = None
    gateways: list[MercatoProcess] = field(default_factory=list)
    members: list[MercatoProcess] = field(default_factory=list)

    @property
    def gateway_urls(self) -> list[str]:
        return [gateway.url for gateway in self.gateways]

    def log(self) -> str:
        return "".join(member.log() for member in self.members)

    def stop(self, timeout: float = 30) -> int:
        """nginx, then SIGTERM to every process, as systemd would stop them."""
        stop_all(self.members, self.nginx, timeout=timeout)
        return 0


def topology_env(root: Path, urls: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The environment every process of the topology shares (deploy/Procfile's): the
    servers' URLs, NOTIFICATIONS_IN_PROCESS=false (the worker mails), nginx (127.0.0.1)
    trusted by the gateways and the gateways by the services."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "BROKER_URL", "MERCATO_CONFIG", "PORT"}
    }
    loopback = "127.0.0.1/32"
    environment.update(
        {
            "ENVIRONMENT": "development",
            "HOST": "127.0.0.1",
            "DATA_DIR": str(root / "var"),
            "LOG_FORMAT": "json",
            "SECRETS_DIR": str(root / "no-secrets"),
            "PROMETHEUS_MULTIPROC_DIR": str(root / "metrics"),
            "NOTIFICATIONS_IN_PROCESS": "false",
            # Eight service workers per topology, several topologies at once (the e2e run's
            # session one and a module's): the PostgreSQL server allows 100 connections.
            "DATABASE_POOL_SIZE": "4",
            "MESSAGING_EXCHANGE": f"mercato.deploy.{uuid.uuid4().hex[:10]}",
            "RATE_LIMIT_PREFIX": f"deploy-{uuid.uuid4().hex[:10]}",
            # One signing key for every auth worker, given: workers starting side by side
            # would race to create the development key file.
            "JWT_PRIVATE_KEYS": KeySet([SigningKey.generate()]).to_pem(),
            **urls,
            **extra,
        }
    )
    environment["TRUSTED_PROXIES"] = _merged_networks(loopback, extra.get("TRUSTED_PROXIES"))
    environment["INTERNAL_PROXIES"] = _merged_networks(loopback, extra.get("INTERNAL_PROXIES"))
    return environment


def service_ports(ports: Mapping[str, int] | None = None) -> dict[str, int]:
    """A free port for every backend service (``ports``' own where given)."""
    chosen = {name: port for name, port in (ports or {}).items() if name in BACKENDS}
    for name in BACKENDS:
        if name not in chosen:
            chosen[name] = free_port()
    return chosen


def start_topology(
    root: Path,
    env: Mapping[str, str],
    *,
    ports: Mapping[str, int] | None = None,
    workers: int = 2,
    gateways: int = 2,
    ready_timeout: float = 120,
) -> RunningTopology:
    """Start the services, then the worker and the gateways, then nginx, each once the one
    before is ready; the caller stops them (``RunningTopology.stop``)."""
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    backends = service_ports(ports)
    public_port = free_port()  # nginx's: the address users (and mailed links) see
    environment = {
        "PUBLIC_URL": f"http://127.0.0.1:{public_port}",
        **env,
        **{SERVICE_PORT_SETTINGS[name]: str(port) for name, port in backends.items()},
    }
    members: list[MercatoProcess] = []
    nginx: Nginx | None = None
    try:
        for name in BACKENDS:
            serve = ["serve", name, "--workers", str(workers)]
            url = f"http://127.0.0.1:{backends[name]}"
            members.append(start_mercato(name, serve, environment, url, logs))
        wait_ready(members, ready_timeout)
        worker_port = free_port()
        worker = ["worker", "--port", str(worker_port)]
        members.append(
            start_mercato("worker", worker, environment, f"http://127.0.0.1:{worker_port}", logs)
        )
        instances = []
        for number in range(1, gateways + 1):
            port = free_port()
            instance_env = {
                **environment,
                "PORT": str(port),
                # Each instance its own metrics directory: each empties it at start.
                "PROMETHEUS_MULTIPROC_DIR": str(root / "metrics" / f"gateway-{number}"),
            }
            serve = ["serve", "gateway", "--workers", str(workers)]
            url = f"http://127.0.0.1:{port}"
            instances.append(start_mercato(f"gateway-{number}", serve, instance_env, url, logs))
        members.extend(instances)
        wait_ready(members, ready_timeout)
        nginx = Nginx(
            root / "nginx", public_port, [i.url.removeprefix("http://") for i in instances]
        )
        nginx.start()
        assert nginx.process is not None
    except BaseException:
        stop_all(members, nginx, timeout=10)
        raise
    return RunningTopology(
        process=nginx.process,
        ports={"gateway": nginx.port, **backends},
        data_dir=Path(environment["DATA_DIR"]),
        log_path=nginx.prefix / "logs" / "error.log",
        nginx=nginx,
        gateways=instances,
        members=members,
    )


def stop_all(members: Sequence[MercatoProcess], nginx: Nginx | None, *, timeout: float) -> None:
    """nginx first, then SIGTERM to every process at once, and wait for each."""
    if nginx is not None:
        nginx.stop()
    for member in members:
        if member.process.poll() is None:
            member.process.send_signal(signal.SIGTERM)
    for member in members:
        stop_process(member.process, signal.SIGTERM, timeout=timeout)


@contextlib.contextmanager
def servers_topology(
    root: Path,
    env: Mapping[str, str] | None = None,
    *,
    ports: Mapping[str, int] | None = None,
    workers: int = 2,
    ready_timeout: float = 120,
) -> Iterator[RunningTopology]:
    """The whole topology for the block, on its own database, Redis database and exchange
    (``env``'s DATABASE_URL, REDIS_URL or BROKER_URL where it names them)."""
    extra = dict(env or {})
    with contextlib.ExitStack() as stack:
        urls = {
            "DATABASE_URL": extra.pop("DATABASE_URL", None)
            or stack.enter_context(fresh_database()),
            "REDIS_URL": extra.pop("REDIS_URL", None) or stack.enter_context(own_redis_database()),
            "BROKER_URL": extra.pop("BROKER_URL", None)
            or require_server(TEST_BROKER_URL, 5672, "RabbitMQ"),
        }
        topology = start_topology(
            root,
            topology_env(root, urls, extra),
            ports=ports,
            workers=workers,
            ready_timeout=ready_timeout,
        )
        try:
            yield topology
        finally:
            topology.stop()


def gunicorn_workers(master_pid: int) -> set[int]:
    """The pids of a gunicorn master's worker processes (its children, from /proc)."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children")
    return {int(pid) for pid in re.findall(r"\d+", children.read_text())}
