"""Orders end to end, in-process: the whole of ``mercato up`` (gateway, four services, their
relays and consumers, one event loop) serving in this process, a load process (forked)
placing orders through the gateway as ``bench/orders.py`` does, and counts per order.

    PYTHONPATH=tests .venv/bin/python -m bench.profile.orders_flow --servers -n 300
    PYTHONPATH=tests .venv/bin/python -m bench.profile.orders_flow --servers --cprofile
    PYTHONPATH=tests .venv/bin/python -m bench.profile.orders_flow --servers --products 1
    PATH=...py-spy...:$PATH PYTHONPATH=tests .venv/bin/python -m bench.profile.orders_flow \
        --servers --py-spy /tmp/samples.txt      # raw stacks of the measured orders

Counted over the measured orders (after ``--warmup`` orders placed and settled, until their
confirmation mails are sent), divided by their number: this process's CPU time
(getrusage; the load is another process), HTTP requests each app served, SQL statements
and transactions per database (SQLAlchemy engine events), and under ``--cprofile`` the
server thread's Python calls. ``--poll db`` (default) waits by reading the orders table
directly, so that the counts are the saga's own; ``--poll pending`` as ``bench/orders.py``
does (the shoppers' pending orders listed through the gateway every 0.1 s), ``--poll
bench`` as it did (every pending order's ``GET /orders/{id}`` every 50 ms); their requests
are counted with the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import multiprocessing
import os
import pstats
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.engine import Engine

from bench._stack import servers_env
from bench.orders import none_pending, orders_of
from support.orders_flow import (
    FLOW_ENV,
    admin_token,
    create_product,
    place_with_retries,
    sign_up,
    wait_settled,
)
from support.processes import SERVICE_PORT_SETTINGS, free_ports

Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
_ID = re.compile(r"/[0-9a-f]{8}-[0-9a-f-]{27,}")
_SPACES = re.compile(r"\s+")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--orders", type=int, default=200, help="measured orders")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--products", type=int, default=10, help="spread over (1: one hot)")
    parser.add_argument("--servers", action="store_true", help="PostgreSQL, Redis, RabbitMQ")
    parser.add_argument("--poll", choices=["db", "bench", "pending"], default="db")
    parser.add_argument("--idle", type=int, default=0, help="orders one at a time, after")
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--statements", type=int, default=40, help="top statements shown")
    parser.add_argument("--py-spy", metavar="FILE", help="py-spy raw samples of the orders")
    return parser.parse_args()


class Counts:
    """What the server side did, while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.http: Counter[str] = Counter()
        self.sql: Counter[tuple[str, str]] = Counter()
        self.transactions: Counter[str] = Counter()
        self.databases: dict[Any, str] = {}

    def database_of(self, engine: Any) -> str:
        return self.databases.get(getattr(engine, "_proxied", engine), "?")


COUNTS = Counts()


def count_http(service: str, app: Asgi) -> Asgi:
    async def counted(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if COUNTS.on and scope["type"] == "http":
            COUNTS.http[f"{service} {scope['method']} {_ID.sub('/{id}', scope['path'])}"] += 1
        await app(scope, receive, send)

    return counted


def count_sql() -> None:
    from mercato.platform import db

    original = db.Database.__init__

    def init(self: Any, url: Any, *, schema: str | None = None, **options: Any) -> None:
        original(self, url, schema=schema, **options)
        name = schema or Path(str(self.url.database or "memory")).stem
        COUNTS.databases[self.engine.sync_engine] = name

    db.Database.__init__ = init  # type: ignore[method-assign]

    @event.listens_for(Engine, "before_cursor_execute")
    def _statement(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if COUNTS.on:
            text = _SPACES.sub(" ", statement).strip()[:110]
            COUNTS.sql[(COUNTS.database_of(conn.engine), text)] += 1

    for name in ("begin", "commit", "rollback", "savepoint", "release_savepoint"):

        def listener(conn: Any, *_: Any, _name: str = name) -> None:
            if COUNTS.on:
                COUNTS.transactions[f"{COUNTS.database_of(conn.engine)} {_name}"] += 1

        event.listen(Engine, name, listener)


@contextmanager
def environment(servers: bool) -> Iterator[dict[str, int]]:
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="orders-flow-")))
        ports = free_ports()
        env = {
            **FLOW_ENV,
            "LOG_LEVEL": "WARNING",
            "ACCESS_LOG": "false",
            "ENVIRONMENT": "development",
            "DATA_DIR": str(tmp / "var"),
            "LOG_FORMAT": "json",
            "SECRETS_DIR": str(tmp / "no-secrets"),
            **{SERVICE_PORT_SETTINGS[name]: str(port) for name, port in ports.items()},
        }
        for name in ("DATABASE_URL", "REDIS_URL", "BROKER_URL", "MERCATO_CONFIG"):
            os.environ.pop(name, None)
        if servers:
            env.update(stack.enter_context(servers_env("flow")))
        os.environ.update(env)
        yield ports


class Load:
    """The load, in a process of its own: sets up, warms up, then measures (between the two
    ``mark`` calls it makes to the server process)."""

    def __init__(self, options: argparse.Namespace, base_url: str, data_dir: Path) -> None:
        self.options, self.base_url, self.data_dir = options, base_url, data_dir
        self.cpu = 0.0
        self.wall = 0.0
        self.latencies: list[float] = []
        self.idle_latencies: list[float] = []
        self.error: str | None = None

    def run(self, conn: Connection) -> None:
        """In the load process: the load, told to the server process over ``conn``."""

        def mark(measuring: bool) -> None:
            conn.send(measuring)
            conn.recv()

        error = None
        try:
            asyncio.run(self._run(mark))
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
        conn.send(("done", self.cpu, self.wall, self.latencies, self.idle_latencies, error))

    async def _run(self, mark: Callable[[bool], None]) -> None:
        options = self.options
        limits = httpx.Limits(max_connections=options.concurrency * 2)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=60, limits=limits) as client:
            await self._ready(client)
            token = await admin_token(client)
            stock = 2 * (options.orders + options.warmup + options.idle)
            products = [
                await create_product(client, token, stock=stock) for _ in range(options.products)
            ]
            shoppers = await sign_up(client, 10)
            await self._orders(client, shoppers, products, options.warmup)
            await self._mailed(options.warmup)
            started_cpu, started = time.process_time(), time.perf_counter()
            mark(True)
            ids = await self._orders(client, shoppers, products, options.orders)
            await self._mailed(options.warmup + options.orders)
            mark(False)
            self.cpu, self.wall = time.process_time() - started_cpu, time.perf_counter() - started
            self.latencies = await self._to_confirmed(ids)
            for _ in range(options.idle):
                (one,) = await self._orders(client, shoppers, products, 1)
                self.idle_latencies += await self._to_confirmed([one])

    async def _ready(self, client: httpx.AsyncClient) -> None:
        for _ in range(600):
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError("mercato did not get ready")

    async def _orders(
        self, client: httpx.AsyncClient, shoppers: list[Any], products: list[str], count: int
    ) -> list[str]:
        gate = asyncio.Semaphore(self.options.concurrency)

        async def one(i: int) -> tuple[Any, str]:
            shopper = shoppers[i % len(shoppers)]
            async with gate:
                items = [{"product_id": products[i % len(products)], "quantity": 1}]
                placed = await place_with_retries(client, shopper, items)
            if placed.order_id is None:
                raise RuntimeError(f"not placed: {placed}")
            return shopper, placed.order_id

        owned = await asyncio.gather(*(one(i) for i in range(count)))
        if self.options.poll == "bench":  # as bench/orders.py did: GET /orders/{id} each
            await wait_settled(client, owned, within=300)
        elif self.options.poll == "pending":  # as bench/orders.py does
            await none_pending(client, shoppers, within=300)
            await orders_of(client, list(owned))
        else:
            await self._settled_in_db([order_id for _, order_id in owned])
        return [order_id for _, order_id in owned]

    def _query(self, sql: str, ids: list[str]) -> list[tuple[Any, ...]]:
        """``sql`` with ``{ids}`` standing for the list of ``ids``, on the orders database."""
        url = os.environ.get("DATABASE_URL")
        if url:
            import psycopg

            conninfo = url.replace("+asyncpg", "")
            with psycopg.connect(conninfo, options="-c search_path=orders") as connection:
                marks = ",".join(["%s"] * len(ids))
                return list(connection.execute(sql.format(ids=marks), ids).fetchall())
        with sqlite3.connect(self.data_dir / "orders.db") as connection:
            marks = ",".join("?" * len(ids))
            return connection.execute(sql.format(ids=marks), ids).fetchall()

    async def _settled_in_db(self, ids: list[str]) -> None:
        deadline = time.monotonic() + 300
        query = "SELECT count(*) FROM orders WHERE status = 'pending' AND id IN ({ids})"
        while time.monotonic() < deadline:
            if self._query(query, ids)[0][0] == 0:
                return
            await asyncio.sleep(0.02)
        raise TimeoutError("orders still pending")

    async def _mailed(self, count: int) -> None:
        """Wait until ``count`` confirmation mails are sent (the tail of the measured orders
        is theirs); not when the notification worker runs elsewhere."""
        if os.environ.get("NOTIFICATIONS_IN_PROCESS", "true").lower() in {"false", "0"}:
            await asyncio.sleep(1.0)
            return
        query = "SELECT count(*) FROM notifications WHERE sent_at IS NOT NULL {ids}"
        deadline = time.monotonic() + 120
        while self._query(query, [])[0][0] < count:
            if time.monotonic() > deadline:
                raise TimeoutError("confirmation mails still unsent")
            await asyncio.sleep(0.05)

    async def _to_confirmed(self, ids: list[str]) -> list[float]:
        query = "SELECT created_at, updated_at, status FROM orders WHERE id IN ({ids})"
        rows = self._query(query, ids)
        found = []
        for created, updated, status in rows:
            if status != "confirmed":
                raise RuntimeError(f"an order was {status}")
            if isinstance(created, str):
                from datetime import datetime

                created, updated = datetime.fromisoformat(created), datetime.fromisoformat(updated)
            found.append((updated - created).total_seconds())
        return found


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def report(
    options: argparse.Namespace, load: Load, server_cpu: float, profiler: cProfile.Profile | None
) -> None:
    n = options.orders
    print(
        f"\n{n} orders over {options.products} product(s), concurrency {options.concurrency},"
        f" {'servers' if options.servers else 'embedded'}, poll {options.poll}"
    )
    print(
        f"server CPU {server_cpu / n * 1e3:.2f} ms/order (load process {load.cpu / n * 1e3:.2f}"
        f" ms/order); wall {n / load.wall:.1f} orders/s (shared machine: a sanity check)"
    )
    print(
        f"POST -> confirmed p50 {percentile(load.latencies, 50) * 1e3:.0f} ms,"
        f" p99 {percentile(load.latencies, 99) * 1e3:.0f} ms"
    )
    if load.idle_latencies:
        print(
            f"idle POST -> confirmed p50 {percentile(load.idle_latencies, 50) * 1e3:.0f} ms,"
            f" p99 {percentile(load.idle_latencies, 99) * 1e3:.0f} ms"
        )
    print("\nHTTP requests per order")
    for key, value in sorted(COUNTS.http.items()):
        print(f"  {value / n:6.2f}  {key}")
    print(f"  {sum(COUNTS.http.values()) / n:6.2f}  in all")
    print("\ntransactions per order")
    for key, value in sorted(COUNTS.transactions.items()):
        print(f"  {value / n:6.2f}  {key}")
    per_db: Counter[str] = Counter()
    for (database, _), value in COUNTS.sql.items():
        per_db[database] += value
    print("\nSQL statements per order")
    for database, value in sorted(per_db.items()):
        print(f"  {value / n:6.2f}  {database}")
    print(f"  {sum(per_db.values()) / n:6.2f}  in all")
    trips = sum(per_db.values()) + sum(COUNTS.transactions.values())
    print(f"  {trips / n:6.2f}  round trips (statements + transaction control)")
    print(f"\ntop {options.statements} statements per order")
    for (database, text), value in COUNTS.sql.most_common(options.statements):
        print(f"  {value / n:6.2f}  {database:9} {text}")
    if profiler is not None:
        stats = pstats.Stats(profiler, stream=sys.stdout)
        calls = sum(stat[1] for stat in stats.stats.values())  # type: ignore[attr-defined]
        print(f"\nPython calls per order (server thread): {calls / n:,.0f}")
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumulative").print_stats(60)


def py_spy(path: str) -> subprocess.Popen[bytes]:
    """py-spy sampling this process (its raw, collapsed stacks to ``path``) until SIGINT."""
    spy = shutil.which("py-spy") or "py-spy"
    command = [spy, "record", "-r", "250", "--format", "raw", "--threads", "-o", path]
    process = subprocess.Popen([*command, "--pid", str(os.getpid())], stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # attached before the first order
    return process


def main() -> None:
    options = arguments()
    with environment(options.servers) as ports:
        from mercato import serving
        from mercato.platform.logging import configure_logging
        from mercato.settings import load_settings

        count_sql()
        build_app = serving.build_app

        def counted_app(service: Any, settings: Any, **kwargs: Any) -> Any:
            return count_http(service, build_app(service, settings, **kwargs))

        serving.build_app = counted_app  # type: ignore[assignment]
        settings = load_settings(env_file=None)
        configure_logging(service="mercato", level="WARNING", fmt="json")
        load = Load(options, f"http://127.0.0.1:{ports['gateway']}", settings.data_dir)
        profiler = cProfile.Profile() if options.cprofile else None
        cpu: dict[str, float] = {}
        conn, child_conn = multiprocessing.Pipe()
        child = multiprocessing.get_context("fork").Process(target=load.run, args=(child_conn,))
        child.start()

        async def serve() -> None:
            loop = asyncio.get_running_loop()
            runner = asyncio.create_task(serving.run_all(settings))
            spy: list[subprocess.Popen[bytes]] = []
            done = asyncio.Event()

            def on_message() -> None:
                message = conn.recv()
                if not isinstance(message, bool):
                    _, load.cpu, load.wall, load.latencies, load.idle_latencies, load.error = (
                        message
                    )
                    loop.remove_reader(conn.fileno())
                    done.set()
                    return
                COUNTS.on = message
                if options.py_spy and message:
                    spy.append(py_spy(options.py_spy))
                elif spy:
                    spy[0].send_signal(signal.SIGINT)
                    spy[0].wait()
                cpu["start" if message else "end"] = cpu_now()
                if profiler is not None:
                    if message:
                        profiler.enable()
                    else:
                        profiler.disable()
                conn.send(True)

            loop.add_reader(conn.fileno(), on_message)
            await done.wait()
            os.kill(os.getpid(), signal.SIGINT)
            await runner

        serving.run_event_loop(serve())
        child.join()
        if load.error is not None:
            raise SystemExit(f"the load failed: {load.error}")
        report(options, load, cpu["end"] - cpu["start"], profiler)


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
