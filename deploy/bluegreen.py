# ruff: noqa: S603 - every command run is the operator's own (--mercato, --nginx)
"""Blue-green deploys of Mercato on one machine, behind nginx (deploy/nginx).

    python deploy/bluegreen.py deploy [--mercato /srv/mercato/releases/42/.venv/bin/mercato]
    python deploy/bluegreen.py rollback
    python deploy/bluegreen.py status

A colour is a whole set of processes (the gateway, the four services under gunicorn, the
notification worker) on its own ports: blue from 8000 (the Procfile's ports: gateway 8000,
users 8001, orders 8002, products 8003, auth 8004, worker 8005), green from 8100. ``deploy``
starts the given release on the idle colour (services first, then the worker and the
gateway), waits until every process answers /readyz, rewrites nginx's upstream include to
the new colour's gateway, reloads nginx, waits until nginx's old workers are gone, then
drains the old colour (SIGTERM: each process finishes its requests within GRACEFUL_TIMEOUT
and exits). ``rollback`` switches back to the previous
colour the same way, starting its release again unless it still runs (``--keep-old``).

Both colours share one database: a release may only expand the schema (run its
`mercato migrate` before ``deploy``, or pass ``--migrate``), and contract it in a later
release, once no running colour needs what it removes (docs/deploy/topology.md).

Every process gets this script's environment (the settings: DATABASE_URL, REDIS_URL,
BROKER_URL, TRUSTED_PROXIES=127.0.0.1/32, INTERNAL_PROXIES=127.0.0.1/32,
NOTIFICATIONS_IN_PROCESS=false, ...) plus its colour's ports. The state (which colour is
live, each colour's release and pids) is a small JSON file in ``--state-dir``, next to the
processes' logs. Only the standard library is used: the script runs with any Python 3.11.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, NoReturn

COLOURS = ("blue", "green")
#: Each process's port, as an offset from its colour's base port (the Procfile's layout).
OFFSETS = {"gateway": 0, "users": 1, "orders": 2, "products": 3, "auth": 4, "worker": 5}
PORT_SETTINGS = {
    "gateway": "PORT",
    "users": "USERS_PORT",
    "orders": "ORDERS_PORT",
    "products": "PRODUCTS_PORT",
    "auth": "AUTH_PORT",
}
BACKENDS = ("auth", "users", "products", "orders")
NGINX_PREFIX = "/var/lib/mercato-nginx"


def other(colour: str) -> str:
    return COLOURS[1 - COLOURS.index(colour)]


class Deployer:
    """The machine's colours, their processes and nginx, as the options describe them."""

    def __init__(self, options: argparse.Namespace) -> None:
        self.state_dir = Path(options.state_dir)
        self.state_file = self.state_dir / "state.json"
        self.upstream_file = Path(options.upstream_file)
        self.nginx = shlex.split(options.nginx)
        self.nginx_pid_file = Path(options.nginx_pid)
        self.bases = {"blue": options.blue_port, "green": options.green_port}
        self.workers = options.workers
        self.ready_timeout = options.ready_timeout
        self.drain_timeout = options.drain_timeout
        self.keep_old = options.keep_old

    # --- state ---------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        if self.state_file.exists():
            state: dict[str, Any] = json.loads(self.state_file.read_text())
            return state
        return {"live": None, "previous": None, "colours": {}}

    def save(self, state: dict[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        scratch = self.state_file.with_suffix(".tmp")
        scratch.write_text(json.dumps(state, indent=2) + "\n")
        scratch.replace(self.state_file)  # atomic: a crash leaves the old state or the new

    # --- processes ------------------------------------------------------------------------

    def port(self, colour: str, name: str) -> int:
        return int(self.bases[colour]) + OFFSETS[name]

    def environment(self, colour: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({setting: str(self.port(colour, n)) for n, setting in PORT_SETTINGS.items()})
        # Each colour its own metrics directories: a service empties its own at start.
        base = env.get("PROMETHEUS_MULTIPROC_DIR") or str(self.state_dir / "metrics")
        env["PROMETHEUS_MULTIPROC_DIR"] = str(Path(base) / colour)
        return env

    def start(self, colour: str, mercato: str, names: tuple[str, ...]) -> dict[str, int]:
        """Start ``mercato``'s processes ``names`` on ``colour``'s ports; return their pids."""
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = self.environment(colour)
        pids = {}
        for name in names:
            command = (
                [mercato, "worker", "--port", str(self.port(colour, name))]
                if name == "worker"
                else [mercato, "serve", name, "--workers", str(self.workers)]
            )
            with (logs / f"{colour}-{name}.log").open("ab") as log:
                process = subprocess.Popen(
                    command,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # outlives this script, as a service would
                )
            pids[name] = process.pid
        say(f"{colour}: started {', '.join(names)} of {mercato}")
        return pids

    def start_ready(self, state: dict[str, Any], colour: str, mercato: str) -> dict[str, int]:
        """The services first, then (once they are ready, and have migrated where
        AUTO_MIGRATE is on) the worker and the gateway; return once all are ready."""
        pids: dict[str, int] = {}
        for names in (BACKENDS, ("worker", "gateway")):
            pids |= self.start(colour, mercato, names)
            state["colours"][colour] = {"release": mercato, "pids": pids, "started": time.time()}
            self.save(state)
            self.wait_ready(colour, pids)
        return pids

    def ready(self, colour: str, name: str) -> bool:
        url = f"http://127.0.0.1:{self.port(colour, name)}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def running(self, state: dict[str, Any], colour: str) -> bool:
        pids = state["colours"].get(colour, {}).get("pids", {})
        return bool(pids) and all(alive(pid) for pid in pids.values())

    def wait_ready(self, colour: str, pids: dict[str, int]) -> None:
        deadline = time.monotonic() + self.ready_timeout
        waiting = list(pids)
        while waiting:
            name = waiting[0]
            if not alive(pids[name]):
                self.stop(pids, quiet=True)
                fail(f"{colour} {name} exited; see {self.state_dir}/logs/{colour}-{name}.log")
            if self.ready(colour, name):
                waiting.pop(0)
                continue
            if time.monotonic() > deadline:
                self.stop(pids, quiet=True)
                fail(f"{colour} {name} not ready after {self.ready_timeout:.0f} s; stopped")
            time.sleep(0.2)
        say(f"{colour}: {', '.join(pids)} ready")

    def stop(self, pids: dict[str, int], *, quiet: bool = False) -> None:
        """SIGTERM, the gateway first; wait for every process to exit (each drains its
        requests within GRACEFUL_TIMEOUT), then SIGKILL what is left of its group."""
        order = ["gateway", *(name for name in pids if name != "gateway")]
        for name in order:
            if name in pids and alive(pids[name]):
                os.kill(pids[name], signal.SIGTERM)
        deadline = time.monotonic() + self.drain_timeout
        while any(alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in pids.values():
            if alive(pid):
                say(f"pid {pid} still running after {self.drain_timeout:.0f} s; killed")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # its gunicorn workers, if any are left
        if not quiet:
            say(f"drained pids {', '.join(map(str, pids.values()))}")

    # --- nginx ---------------------------------------------------------------------------

    def switch_nginx(self, colour: str) -> None:
        """Point the upstream include at ``colour``'s gateway and reload nginx; return once
        every old nginx worker (which still speaks to the old colour) has exited."""
        address = f"127.0.0.1:{self.port(colour, 'gateway')}"
        before = self.upstream_file.read_text() if self.upstream_file.exists() else ""
        self.write_upstream(
            f"# Written by deploy/bluegreen.py: the {colour} colour is live.\nserver {address};\n"
        )
        master = int(self.nginx_pid_file.read_text().strip())
        old_workers = children(master)
        test = subprocess.run([*self.nginx, "-t", "-q"], capture_output=True, text=True)
        if test.returncode != 0:
            self.write_upstream(before)  # the file says what nginx runs, as before
            fail(f"nginx -t refused the configuration:\n{test.stderr}")
        subprocess.run([*self.nginx, "-s", "reload"], check=True)
        deadline = time.monotonic() + self.drain_timeout
        while old_workers & children(master) or not children(master):
            if time.monotonic() > deadline:
                fail("nginx's old workers did not exit; the old colour is left running")
            time.sleep(0.05)
        say(f"nginx: upstream is {colour} ({address})")

    def write_upstream(self, text: str) -> None:
        scratch = self.upstream_file.with_suffix(".tmp")
        scratch.write_text(text)
        scratch.replace(self.upstream_file)  # atomic: nginx never reads half a file

    # --- commands ------------------------------------------------------------------------

    def switch_to(self, state: dict[str, Any], colour: str, mercato: str) -> None:
        """Make ``colour`` (running ``mercato``) live, and drain the colour that was."""
        was = state["live"]
        entry = state["colours"].get(colour, {})
        if self.running(state, colour) and entry.get("release") == mercato:
            say(f"{colour}: already running {mercato}")
        else:
            if entry.get("pids"):
                self.stop(entry["pids"], quiet=True)
            self.start_ready(state, colour, mercato)
        self.switch_nginx(colour)
        state["live"], state["previous"] = colour, was
        self.save(state)
        if was is not None and was != colour and not self.keep_old:
            self.stop(state["colours"][was]["pids"])
            state["colours"][was]["pids"] = {}
            self.save(state)

    def deploy(self, mercato: str, migrate: bool) -> None:
        state = self.load()
        colour = "blue" if state["live"] is None else other(state["live"])
        if migrate:
            say(f"migrating with {mercato} (expand only: the live colour keeps running)")
            subprocess.run([mercato, "migrate"], check=True, env=self.environment(colour))
        self.switch_to(state, colour, mercato)

    def rollback(self) -> None:
        state = self.load()
        if state["previous"] is None or state["live"] is None:
            fail("nothing to roll back to: no previous colour")
        previous = state["previous"]
        self.switch_to(state, previous, state["colours"][previous]["release"])

    def status(self) -> None:
        state = self.load()
        print(f"live: {state['live'] or 'none'}")
        for colour in COLOURS:
            entry = state["colours"].get(colour)
            if not entry:
                print(f"{colour}: never started")
                continue
            up = {name: alive(pid) for name, pid in entry["pids"].items()}
            ready = [name for name in OFFSETS if up.get(name) and self.ready(colour, name)]
            print(
                f"{colour}: {entry['release']} on port {self.port(colour, 'gateway')}, "
                f"{sum(up.values())}/{len(OFFSETS)} processes, ready: {', '.join(ready) or '-'}"
            )


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie no parent reaped yet does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children(pid: int) -> set[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(child) for child in text.split()}


def say(message: str) -> None:
    print(f"bluegreen: {message}", flush=True)


def fail(message: str) -> NoReturn:
    print(f"bluegreen: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def parse(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["deploy", "rollback", "status"])
    default_mercato = str(Path(sys.executable).with_name("mercato"))
    parser.add_argument("--mercato", default=default_mercato, help="the release's mercato")
    parser.add_argument("--migrate", action="store_true", help="run its `mercato migrate` first")
    parser.add_argument("--keep-old", action="store_true", help="leave the old colour running")
    parser.add_argument("--workers", type=int, default=int(env("BLUEGREEN_WORKERS", "2")))
    parser.add_argument("--state-dir", default=env("BLUEGREEN_STATE_DIR", "/var/lib/mercato"))
    parser.add_argument(
        "--upstream-file", default=env("BLUEGREEN_UPSTREAM", "/etc/mercato/nginx/upstream.conf")
    )
    parser.add_argument(
        "--nginx",
        default=env(
            "BLUEGREEN_NGINX", "nginx -p /var/lib/mercato-nginx/ -c /etc/mercato/nginx/nginx.conf"
        ),
        help="the nginx command line, without -s or -t",
    )
    parser.add_argument(
        "--nginx-pid", default=env("BLUEGREEN_NGINX_PID", f"{NGINX_PREFIX}/logs/nginx.pid")
    )
    parser.add_argument("--blue-port", type=int, default=int(env("BLUEGREEN_BLUE_PORT", "8000")))
    parser.add_argument("--green-port", type=int, default=int(env("BLUEGREEN_GREEN_PORT", "8100")))
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument(
        "--drain-timeout", type=float, default=40.0, help="> GRACEFUL_TIMEOUT, seconds"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    options = parse(argv)
    deployer = Deployer(options)
    if options.command == "deploy":
        deployer.deploy(options.mercato, options.migrate)
    elif options.command == "rollback":
        deployer.rollback()
    else:
        deployer.status()


if __name__ == "__main__":
    main()
