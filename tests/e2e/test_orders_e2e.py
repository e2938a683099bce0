"""Orders through the gateway of a real `mercato up` (embedded defaults): the stock race,
idempotent retries, cancellation, and the notification mail."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.orders_flow import (
    FLOW_ENV,
    admin_token,
    create_product,
    place_with_retries,
    sign_up,
    stock_of,
    wait_settled,
)
from support.processes import RunningMercato, mercato_up
from support.servers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMercato]:
    """`mercato up` with a bootstrap administrator (to stock products) and limits opened up
    for one test client."""
    ports: set[int] = set()
    while len(ports) < 5:
        ports.add(free_port())
    names = ["gateway", "auth", "users", "products", "orders"]
    with mercato_up(
        tmp_path_factory.mktemp("orders-e2e"),
        dict(zip(names, sorted(ports), strict=True)),
        env=FLOW_ENV,
    ) as running:
        yield running


def client_for(shop: RunningMercato) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=shop.base_url, timeout=30)


async def test_twenty_users_race_for_five_units(shop: RunningMercato) -> None:
    async with client_for(shop) as client:
        product_id = await create_product(client, await admin_token(client), stock=5)
        shoppers = await sign_up(client, 20)
        placements = await asyncio.gather(
            *(
                place_with_retries(client, s, [{"product_id": product_id, "quantity": 1}])
                for s in shoppers
            )
        )
        assert [p.status for p in placements] == [201] * 20
        orders = await wait_settled(
            client,
            [(s, p.order_id) for s, p in zip(shoppers, placements, strict=True) if p.order_id],
        )
        outcome = Counter(order["status"] for order in orders.values())
        assert outcome == {"confirmed": 5, "rejected": 15}
        assert all(o["reason"] for o in orders.values() if o["status"] == "rejected")
        assert await stock_of(client, product_id) == 0


async def test_a_retried_order_is_placed_once_and_a_cancel_gives_the_stock_back(
    shop: RunningMercato,
) -> None:
    async with client_for(shop) as client:
        product_id = await create_product(client, await admin_token(client), stock=3)
        (shopper,) = await sign_up(client, 1)
        items = [{"product_id": product_id, "quantity": 2}]
        first = await place_with_retries(client, shopper, items, key="e2e-key")
        again = await place_with_retries(client, shopper, items, key="e2e-key")
        assert first.status == again.status == 201
        assert first.order_id == again.order_id
        assert first.order_id is not None
        other_body = await client.post(
            "/api/v1/orders",
            json={"items": [{"product_id": product_id, "quantity": 1}]},
            headers={**shopper.headers, "Idempotency-Key": "e2e-key"},
        )
        assert other_body.status_code == 422
        settled = await wait_settled(client, [(shopper, first.order_id)])
        assert settled[first.order_id]["status"] == "confirmed"
        assert await stock_of(client, product_id) == 1
        mine = (await client.get("/api/v1/orders", headers=shopper.headers)).json()
        assert mine["total"] == 1
        cancel = await client.post(
            f"/api/v1/orders/{first.order_id}/cancel", headers=shopper.headers
        )
        assert cancel.status_code == 200
        assert cancel.json()["status"] == "cancelled"
        for _ in range(100):
            if await stock_of(client, product_id) == 3:
                break
            await asyncio.sleep(0.05)
        assert await stock_of(client, product_id) == 3
        again_cancel = await client.post(
            f"/api/v1/orders/{first.order_id}/cancel", headers=shopper.headers
        )
        assert again_cancel.status_code == 409


async def test_a_confirmed_order_is_mailed_to_its_customer(shop: RunningMercato) -> None:
    async with client_for(shop) as client:
        product_id = await create_product(client, await admin_token(client), stock=1)
        (shopper,) = await sign_up(client, 1)
        placed = await place_with_retries(
            client, shopper, [{"product_id": product_id, "quantity": 1}]
        )
        assert placed.order_id is not None
        await wait_settled(client, [(shopper, placed.order_id)])
    mail_dir = Path(shop.data_dir) / "outbox-mail"
    for _ in range(100):
        found = [p for p in mail_dir.glob("*.eml") if placed.order_id in p.read_text()]
        if found:
            break
        await asyncio.sleep(0.05)
    assert found, "no mail for the confirmed order"
    assert f"{shopper.username}@example.com" in found[0].read_text()
