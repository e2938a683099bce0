"""An Idempotency-Key whose request a database outage cut off (issue 17): the key could be
neither used nor released while the database was down, and the client's retry after the
outage must not wait for the lock timeout (60 s of 409s) to get its order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mercato.orders.repository import IdempotencyRepository
from support.auth import auth_headers
from support.orders import OrdersHarness, ProductsStub

pytestmark = pytest.mark.anyio

KEYED = {**auth_headers("alice"), "Idempotency-Key": "cut-off"}


async def test_a_key_the_outage_left_in_flight_is_retaken_by_the_retry_at_once(
    orders: OrdersHarness, products: ProductsStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"items": [{"product_id": products.add(), "quantity": 1}]}
    outbox = orders.app.state.orders.outbox
    real_publish = outbox.publish

    async def connection_lost(*args: Any, **kwargs: Any) -> None:
        raise ConnectionResetError("the database closed the connection mid-query")

    async def still_down(self: IdempotencyRepository, row_id: int) -> None:
        raise ConnectionRefusedError("the database is still down")

    with monkeypatch.context() as outage:
        outage.setattr(outbox, "publish", connection_lost)
        outage.setattr(IdempotencyRepository, "release", still_down)
        cut_off = await orders.client.post("/orders", json=body, headers=KEYED)
    assert cut_off.status_code == 503
    assert await orders.keys() == 1  # left in flight: the release failed too
    assert outbox.publish == real_publish

    retry = await orders.client.post("/orders", json=body, headers=KEYED)
    assert retry.status_code == 201, retry.text
    replay = await orders.client.post("/orders", json=body, headers=KEYED)
    assert replay.json()["id"] == retry.json()["id"]
    assert await orders.orders() == 1


async def test_a_key_another_request_holds_is_still_409(
    orders: OrdersHarness, products: ProductsStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a key this process failed to release is retaken early; one in flight is not."""
    body = {"items": [{"product_id": products.add(), "quantity": 1}]}

    async def still_down(self: IdempotencyRepository, row_id: int) -> None:
        raise ConnectionRefusedError("the database is still down")

    async def connection_lost(*args: Any, **kwargs: Any) -> None:
        raise ConnectionResetError("the database closed the connection mid-query")

    with monkeypatch.context() as outage:
        outage.setattr(orders.app.state.orders.outbox, "publish", connection_lost)
        outage.setattr(IdempotencyRepository, "release", still_down)
        await orders.client.post("/orders", json=body, headers=KEYED)
    products.delay = 0.5
    first, second = await asyncio.gather(
        orders.client.post("/orders", json=body, headers=KEYED),
        orders.client.post("/orders", json=body, headers=KEYED),
    )
    assert sorted([first.status_code, second.status_code]) == [201, 409]
    assert await orders.orders() == 1
