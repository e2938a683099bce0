"""SIGTERM while orders are being placed and slow clients trickle request bodies in, to the
gateway and to a service directly: `mercato up` drains what it can and exits cleanly, within
GRACEFUL_TIMEOUT (plus the 2 s the contract allows), not once per server it runs."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest

from support.deploy_topology import topology_requested
from support.orders_flow import FLOW_ENV, admin_token, create_product, sign_up
from support.processes import mercato_up
from support.servers import free_port
from support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

GRACEFUL_TIMEOUT = 3.0


async def trickle(port: int, path: str, stop: asyncio.Event) -> None:
    """A request whose body never finishes: one byte every 0.2 s until the server hangs up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 100000\r\n\r\n{".encode()
    )
    try:
        while not (stop.is_set() and reader.at_eof()):
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.2)
    except OSError:
        return  # the server closed the connection
    finally:
        writer.close()


async def test_sigterm_under_load_exits_with_zero_within_the_graceful_timeout(
    tmp_path: Path,
) -> None:
    ports: set[int] = set()
    while len(ports) < 5:
        ports.add(free_port())
    names = ["gateway", "auth", "users", "products", "orders"]
    env = {**FLOW_ENV, "GRACEFUL_TIMEOUT": str(GRACEFUL_TIMEOUT)}
    with mercato_up(tmp_path, dict(zip(names, sorted(ports), strict=True)), env=env) as running:
        async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as client:
            product_id = await create_product(client, await admin_token(client), stock=100_000)
            shoppers = await sign_up(client, 4)
            answered: list[int] = []
            signalled = asyncio.Event()

            async def shop(headers: dict[str, str]) -> None:
                """Order and browse without pause until the server goes away."""
                while True:
                    try:
                        placed = await client.post(
                            "/api/v1/orders",
                            json={"items": [{"product_id": product_id, "quantity": 1}]},
                            headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
                        )
                        listed = await client.get("/api/v1/products")
                    except httpx.HTTPError:
                        if signalled.is_set():
                            return  # the gateway closed: that is the point
                        raise
                    answered.extend((placed.status_code, listed.status_code))

            load = [asyncio.create_task(shop(s.headers)) for s in shoppers]
            load += [
                asyncio.create_task(trickle(running.ports["gateway"], "/api/v1/orders", signalled)),
                asyncio.create_task(trickle(running.ports["orders"], "/orders", signalled)),
            ]
            await eventually(lambda: len(answered) >= 40, within=60)
            assert set(answered) <= {200, 201}, answered
            started = time.monotonic()
            running.process.send_signal(signal.SIGTERM)
            signalled.set()
            code = await asyncio.to_thread(running.process.wait, 60)
            took = time.monotonic() - started
            for task in load:
                task.cancel()
            await asyncio.gather(*load, return_exceptions=True)

    assert code == 0, running.log()[-4000:]
    assert took < GRACEFUL_TIMEOUT + 2, f"exited {took:.1f} s after SIGTERM"
    log = running.log()
    # Every lifespan shut down (consumers drained, relays flushed, databases closed), each
    # service's (on the servers topology, every worker process of each)...
    done = {
        line["service"]
        for line in map(json.loads, filter(lambda text: text.startswith("{"), log.splitlines()))
        if str(line.get("event", "")).startswith("Application shutdown complete")
    }
    assert set(names) <= done, log[-4000:]
    if not topology_requested():  # one process: one lifespan a service
        assert log.count("Application shutdown complete") == len(names), log[-4000:]
    assert "abandoning" not in log  # ...and nothing had to be given up on.
