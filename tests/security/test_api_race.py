"""Business-flow abuse by concurrency (OWASP API6 of 2023): many buyers at once for the last
unit of a product."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from support.security_api import API, Account, Seen, async_client, settled, unique_name

BUYERS = 50


async def place_at_once(
    gateway_url: str, seen: Seen, buyers: list[Account], order: dict[str, Any]
) -> list[httpx.Response]:
    async with async_client(gateway_url, seen) as client:
        return await asyncio.gather(
            *(client.post(f"{API}/orders", json=order, headers=buyer.headers) for buyer in buyers)
        )


def test_fifty_buyers_for_the_last_unit_exactly_one_wins(
    http: httpx.Client,
    gateway_url: str,
    admin: Account,
    new_customer: Callable[[], Account],
    secrets_seen: Seen,
) -> None:
    body = {"sku": unique_name("LAST"), "name": unique_name("Last"), "price": "5.00", "stock": 1}
    created = http.post(f"{API}/products", json=body, headers=admin.headers)
    assert created.status_code == 201, created.text
    product = created.json()
    buyers = [new_customer() for _ in range(BUYERS)]
    order = {"items": [{"product_id": product["id"], "quantity": 1}]}
    placed = asyncio.run(place_at_once(gateway_url, secrets_seen, buyers, order))
    assert [answer.status_code for answer in placed] == [201] * BUYERS
    outcomes = Counter(
        settled(http, buyer, answer.json()["id"])["status"]
        for buyer, answer in zip(buyers, placed, strict=True)
    )
    assert outcomes == {"confirmed": 1, "rejected": BUYERS - 1}
    assert http.get(f"{API}/products/{product['id']}").json()["stock"] == 0
