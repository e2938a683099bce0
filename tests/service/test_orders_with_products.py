"""The saga with the real products service (on a real port) and the in-process broker:
concurrent orders for scarce stock never oversell."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from support.auth import auth_headers
from support.messaging import drain
from support.orders import shop_in_process

pytestmark = pytest.mark.anyio


async def test_twenty_orders_for_five_units_confirm_exactly_five(tmp_path: Path) -> None:
    async with shop_in_process(tmp_path) as shop:
        product_id = await shop.create_product(stock=5, price="4.00")
        body = {"items": [{"product_id": product_id, "quantity": 1}]}
        answers = await asyncio.gather(
            *(
                shop.orders.client.post("/orders", json=body, headers=auth_headers(f"user-{i}"))
                for i in range(20)
            )
        )
        assert [a.status_code for a in answers] == [201] * 20
        await drain(shop.orders.app, shop.products_app)
        statuses = Counter(
            [
                await shop.orders.status_of(a.json()["id"], auth_headers(a.json()["user_id"]))
                for a in answers
            ]
        )
        assert statuses == {"confirmed": 5, "rejected": 15}
        assert await shop.stock_of(product_id) == 0


async def test_cancelling_a_confirmed_order_puts_the_stock_back(tmp_path: Path) -> None:
    async with shop_in_process(tmp_path) as shop:
        product_id = await shop.create_product(stock=3)
        alice = auth_headers("alice")
        placed = await shop.orders.client.post(
            "/orders", json={"items": [{"product_id": product_id, "quantity": 2}]}, headers=alice
        )
        order_id = placed.json()["id"]
        await drain(shop.orders.app, shop.products_app)
        assert await shop.orders.status_of(order_id, alice) == "confirmed"
        assert await shop.stock_of(product_id) == 1
        cancel = await shop.orders.client.post(f"/orders/{order_id}/cancel", headers=alice)
        assert cancel.status_code == 200
        await drain(shop.orders.app, shop.products_app)
        assert await shop.stock_of(product_id) == 3
        assert await shop.orders.status_of(order_id, alice) == "cancelled"
