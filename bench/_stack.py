"""`mercato up` for the scenarios that drive the whole system, its processes, and the
throw-away resources on the machine's servers (a scratch PostgreSQL database, a private
RabbitMQ exchange), all removed afterwards.

The helpers of the end-to-end tests (tests/support) start and drive it: one way to run it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from bench._harness import SERVER_CORE, Config  # noqa: E402
from support.orders_flow import (  # noqa: E402
    FLOW_ENV,
    admin_token,
    create_product,
    place_with_retries,
    sign_up,
    wait_settled,
)
from support.processes import RunningMercato, free_ports, mercato_up  # noqa: E402
from support.servers import (  # noqa: E402
    TEST_BROKER_URL,
    TEST_DATABASE_URL,
    TEST_REDIS_URL,
    _answers,
)

#: The bench's own Redis database: no other keys of this machine's tests live there.
BENCH_REDIS_URL = TEST_REDIS_URL.rsplit("/", 1)[0] + "/14"


def servers_answer() -> bool:
    """PostgreSQL, Redis and RabbitMQ all answer (the "servers" topology can run)."""
    return (
        _answers(TEST_DATABASE_URL, 5432)
        and _answers(TEST_REDIS_URL, 6379)
        and _answers(TEST_BROKER_URL, 5672)
    )


def postgres_answers() -> bool:
    return _answers(TEST_DATABASE_URL, 5432)


def _admin_conninfo() -> str:
    return TEST_DATABASE_URL.replace("+asyncpg", "").rsplit("/", 1)[0] + "/postgres"


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A new PostgreSQL database (its ``postgresql+asyncpg://`` URL), dropped afterwards."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_admin_conninfo(), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield TEST_DATABASE_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(_admin_conninfo(), autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def servers_env(stack_name: str) -> Iterator[dict[str, str]]:
    """The settings of a `mercato up` on PostgreSQL (a scratch database), Redis and RabbitMQ
    (a private exchange, deleted afterwards)."""
    exchange = f"bench-{stack_name}-{uuid.uuid4().hex[:8]}"
    with scratch_database(f"bench_{stack_name}") as url:
        try:
            yield {
                "DATABASE_URL": url,
                "REDIS_URL": BENCH_REDIS_URL,
                "BROKER_URL": TEST_BROKER_URL,
                "MESSAGING_EXCHANGE": exchange,
                "RATE_LIMIT_PREFIX": exchange,
            }
        finally:
            asyncio.run(delete_topology(exchange))


async def delete_topology(exchange: str) -> None:
    from mercato.settings import load_settings
    from support.messaging_apps import delete_rabbit_topology

    settings = load_settings(env_file=None, broker_url=TEST_BROKER_URL, messaging_exchange=exchange)
    await delete_rabbit_topology(settings, ["auth", "users", "products", "orders", "notifications"])


# --- processes ------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def pin_tree(pid: int, core: int) -> None:
    """Every thread of ``pid`` and its descendants onto ``core`` (taskset -a)."""
    for member in process_tree(pid):
        subprocess.run(
            ["taskset", "-a", "-p", "-c", str(core), str(member)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )


def rss_mb(pids: list[int]) -> float:
    """The resident memory of ``pids`` together, in MB (VmRSS; shared pages count per process,
    as ``ps`` shows them)."""
    total_kb = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total_kb += int(line.split()[1])
    return total_kb / 1024


@contextmanager
def mercato(
    config: Config,
    name: str,
    *,
    servers: bool,
    env: Mapping[str, str] | None = None,
) -> Iterator[RunningMercato]:
    """`mercato up` (embedded defaults, or ``servers``: PostgreSQL + Redis + RabbitMQ) with
    every process on the servers' core."""
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-{name}-")))
        environment = {**FLOW_ENV, "LOG_LEVEL": "WARNING", "ACCESS_LOG": "false", **(env or {})}
        if servers:
            environment.update(stack.enter_context(servers_env(name)))
        up = stack.enter_context(mercato_up(tmp, free_ports(), env=environment, ready_timeout=120))
        if config.pin:
            pin_tree(up.process.pid, SERVER_CORE)
        yield up


def mercato_pids(up: RunningMercato) -> list[int]:
    return process_tree(up.process.pid)


@dataclass(frozen=True)
class Seeded:
    """What a scenario loads: a shopper's token, their order, a product (cache warm)."""

    token: str
    order_id: str
    product_id: str


def seed(up: RunningMercato) -> Seeded:
    """One product, one shopper and their order, placed and settled."""

    async def go() -> Seeded:
        async with httpx.AsyncClient(base_url=up.base_url, timeout=60) as client:
            admin = await admin_token(client)
            product_id = await create_product(client, admin, stock=1000)
            (shopper,) = await sign_up(client, 1)
            placed = await place_with_retries(
                client, shopper, [{"product_id": product_id, "quantity": 1}]
            )
            if placed.order_id is None:
                raise RuntimeError(f"the seed order was not placed: {placed}")
            await wait_settled(client, [(shopper, placed.order_id)])
            for _ in range(2):  # fill the catalogue's cache
                (await client.get(f"/api/v1/products/{product_id}")).raise_for_status()
            return Seeded(shopper.token, placed.order_id, product_id)

    return asyncio.run(go())
