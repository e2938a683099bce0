"""`mercato status --once` against a running `mercato up`: live figures of every service after
an order flow, while traffic goes on."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from support.orders_flow import (
    FLOW_ENV,
    admin_token,
    create_product,
    place_with_retries,
    sign_up,
    wait_settled,
)
from support.processes import SERVICE_PORT_SETTINGS, RunningMercato, mercato_up
from support.servers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMercato]:
    ports: set[int] = set()
    while len(ports) < len(SERVICE_PORT_SETTINGS):
        ports.add(free_port())
    with mercato_up(
        tmp_path_factory.mktemp("status-e2e"),
        dict(zip(SERVICE_PORT_SETTINGS, sorted(ports), strict=True)),
        env=FLOW_ENV,
    ) as running:
        yield running


def status_command(shop: RunningMercato, *extra: str) -> list[str]:
    urls = [f"--url={name}={shop.url(name)}" for name in SERVICE_PORT_SETTINGS]
    return [sys.executable, "-m", "mercato", "status", "--once", "--interval", "1", *urls, *extra]


def run_during_traffic(shop: RunningMercato, command: list[str]) -> tuple[int, str]:
    """Run ``command`` while a client keeps reading the catalogue through the gateway."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    with httpx.Client(base_url=shop.base_url, timeout=10) as client:
        while process.poll() is None:
            client.get("/api/v1/products")
    output = process.communicate(timeout=30)[0].decode()
    return process.returncode, output


def row(output: str, service: str) -> list[str]:
    """The cells of ``service``'s row in the first table (requests)."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip("│ ").split("│")]
        if cells and cells[0] == service:
            return cells
    raise AssertionError(f"no row for {service}:\n{output}")


async def test_status_shows_live_figures_of_every_service(shop: RunningMercato) -> None:
    async with httpx.AsyncClient(base_url=shop.base_url, timeout=30) as client:
        product_id = await create_product(client, await admin_token(client), stock=1)
        shoppers = await sign_up(client, 2)
        placed = [
            await place_with_retries(client, s, [{"product_id": product_id, "quantity": 1}])
            for s in shoppers
        ]
        await wait_settled(
            client, [(s, p.order_id) for s, p in zip(shoppers, placed, strict=True) if p.order_id]
        )
        wrong = {"username": shoppers[0].username, "password": "Not-the-password-1"}
        assert (await client.post("/api/v1/auth/login", json=wrong)).status_code == 401

    code, output = await asyncio.to_thread(run_during_traffic, shop, status_command(shop))

    assert code == 0, output
    for service in SERVICE_PORT_SETTINGS:
        assert row(output, service)[1] == "up", output
    gateway = row(output, "gateway")
    assert float(gateway[2].replace(",", "")) > 0, output  # requests per second, live
    assert re.search(r"\d+(\.\d+)? ms", gateway[4]), output  # p50 of the window
    assert "placed 2 · confirmed 1 · rejected 1 · cancelled 0" in output
    assert re.search(r"success [1-9]\d* · failure 1 · rate-limited 0", output), output
    products_port = shop.ports["products"]
    assert f"products@127.0.0.1:{products_port} closed" in output  # both callers' breakers
    assert "Events (total, and per second)" in output


async def test_a_process_that_does_not_answer_is_down_and_the_exit_code_says_so(
    shop: RunningMercato,
) -> None:
    ghost = f"ghost=http://127.0.0.1:{free_port()}"
    command = status_command(shop, "--url", ghost)
    code, output = await asyncio.to_thread(run_during_traffic, shop, command)
    assert code == 1
    assert "DOWN (ConnectionRefusedError)" in row(output, "ghost")[1]
    assert row(output, "gateway")[1] == "up"
