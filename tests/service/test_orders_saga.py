"""The order saga: replies of products move orders forward only, once, whatever their order."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import select

from mercato.messaging import Envelope, Outbox
from mercato.messaging.tables import outbox
from mercato.orders.funnel import STATUSES, OrderFunnel
from mercato.orders.saga import confirm_order, reject_order
from mercato.products.contracts import ReservedLine, StockRejected, StockReserved
from support.auth import admin_headers, auth_headers
from support.messaging import drain
from support.metrics import metric_value
from support.orders import OrdersHarness, ProductsStub

pytestmark = pytest.mark.anyio

ALICE = auth_headers("alice")


async def place(orders: OrdersHarness, products: ProductsStub) -> str:
    body = {"items": [{"product_id": products.add(), "quantity": 2}]}
    response = await orders.client.post("/orders", json=body, headers=ALICE)
    assert response.status_code == 201
    return str(response.json()["id"])


def reserved(order_id: str) -> Envelope[Any]:
    data = StockReserved(order_id=order_id, items=[ReservedLine(product_id="p", quantity=2)])
    return Envelope[StockReserved](type=data.event_type, source="products", data=data)


def rejected(order_id: str, reason: str = "not enough stock") -> Envelope[Any]:
    data = StockRejected(order_id=order_id, reason=reason)
    return Envelope[StockRejected](type=data.event_type, source="products", data=data)


async def deliver(orders: OrdersHarness, envelope: Envelope[Any]) -> None:
    """Run the orders handler for ``envelope`` as the consumer runner does: one unit of
    work, committed after the handler."""
    handler = confirm_order if isinstance(envelope.data, StockReserved) else reject_order
    async with orders.database.unit_of_work() as uow:
        await handler(envelope, uow, Outbox("orders"))
        await uow.commit()


async def test_stock_reserved_through_the_broker_confirms_the_order(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    order_id = await place(orders, products)
    data = StockReserved(order_id=order_id, items=[ReservedLine(product_id="p", quantity=2)])
    async with orders.database.unit_of_work() as uow:  # products' reply, as the broker carries it
        await Outbox("products").publish(uow, data, key=order_id)
        await uow.commit()
    await drain(orders.app)
    assert await orders.status_of(order_id, ALICE) == "confirmed"
    assert await orders.outbox("order.confirmed") == 1


async def test_stock_rejected_rejects_the_order_with_the_reason(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    order_id = await place(orders, products)
    await deliver(orders, rejected(order_id, "only 1 left of p"))
    order = (await orders.client.get(f"/orders/{order_id}", headers=ALICE)).json()
    assert order["status"] == "rejected"
    assert order["reason"] == "only 1 left of p"
    assert await orders.outbox("order.rejected") == 1
    cancel = await orders.client.post(f"/orders/{order_id}/cancel", headers=ALICE)
    assert cancel.status_code == 409
    assert await orders.outbox("order.cancelled") == 0


async def test_a_repeated_reply_changes_nothing(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    order_id = await place(orders, products)
    await deliver(orders, reserved(order_id))
    await deliver(orders, reserved(order_id))  # redelivered under a new id
    assert await orders.status_of(order_id, ALICE) == "confirmed"
    assert await orders.outbox("order.confirmed") == 1


async def test_a_late_rejection_cannot_undo_a_confirmation(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    order_id = await place(orders, products)
    await deliver(orders, reserved(order_id))
    await deliver(orders, rejected(order_id))
    assert await orders.status_of(order_id, ALICE) == "confirmed"
    assert await orders.outbox("order.rejected") == 0


async def test_a_late_confirmation_cannot_undo_a_rejection(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    order_id = await place(orders, products)
    await deliver(orders, rejected(order_id))
    await deliver(orders, reserved(order_id))
    assert await orders.status_of(order_id, ALICE) == "rejected"
    assert await orders.outbox("order.confirmed") == 0


async def test_a_reply_after_cancellation_leaves_the_order_cancelled(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    order_id = await place(orders, products)
    assert (
        await orders.client.post(f"/orders/{order_id}/cancel", headers=ALICE)
    ).status_code == 200
    await deliver(orders, reserved(order_id))
    assert await orders.status_of(order_id, ALICE) == "cancelled"
    assert await orders.outbox("order.confirmed") == 0


async def test_a_confirmed_order_can_be_cancelled_and_announces_its_lines(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    order_id = await place(orders, products)
    await deliver(orders, reserved(order_id))
    response = await orders.client.post(f"/orders/{order_id}/cancel", headers=admin_headers())
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    async with orders.database.unit_of_work(read_only=True) as uow:
        payload = (
            await uow.session.execute(
                select(outbox.c.payload).where(outbox.c.event_type == "order.cancelled")
            )
        ).scalar_one()
    event = json.loads(payload)
    assert event["data"]["order_id"] == order_id
    assert event["data"]["items"][0]["quantity"] == 2


async def test_a_reply_for_an_unknown_order_is_ignored(orders: OrdersHarness) -> None:
    await deliver(orders, reserved(str(uuid.uuid4())))
    assert await orders.orders() == 0
    assert await orders.outbox() == 0


async def test_order_placed_carries_the_lines_the_total_and_the_request_id(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    pid = products.add(price="2.50")
    body = {"items": [{"product_id": pid, "quantity": 4}]}
    headers = {**ALICE, "X-Request-ID": "req-orders-1"}
    response = await orders.client.post("/orders", json=body, headers=headers)
    assert response.status_code == 201
    async with orders.database.unit_of_work(read_only=True) as uow:
        payload = (await uow.session.execute(select(outbox.c.payload))).scalar_one()
    event = json.loads(payload)
    assert event["type"] == "order.placed"
    assert event["source"] == "orders"
    assert event["request_id"] == "req-orders-1"
    assert event["data"] == {
        "order_id": response.json()["id"],
        "user_id": "alice",
        "items": [{"product_id": pid, "quantity": 4}],
        "total": "10.00",
        "currency": "USD",
    }


def funnel(metrics: str) -> dict[str, float]:
    return {s: metric_value(metrics, "orders_total", status=s) for s in STATUSES}


async def reply(orders: OrdersHarness, data: StockReserved | StockRejected) -> None:
    """Products' reply, as the broker carries it to the orders consumer."""
    async with orders.database.unit_of_work() as uow:
        await Outbox("products").publish(uow, data, key=data.order_id)
        await uow.commit()
    await drain(orders.app)


async def test_the_orders_funnel_counts_each_order_once_its_move_committed(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    assert funnel((await orders.client.get("/metrics")).text) == dict.fromkeys(STATUSES, 0)
    confirmed, rejected_id = await place(orders, products), await place(orders, products)
    lines = [ReservedLine(product_id="p", quantity=2)]
    await reply(orders, StockReserved(order_id=confirmed, items=lines))
    await reply(orders, StockReserved(order_id=confirmed, items=lines))  # repeated: no move
    await reply(orders, StockRejected(order_id=rejected_id, reason="not enough stock"))
    cancel = await orders.client.post(f"/orders/{confirmed}/cancel", headers=ALICE)
    assert cancel.status_code == 200
    again = await orders.client.post(f"/orders/{rejected_id}/cancel", headers=ALICE)
    assert again.status_code == 409
    unknown = {"items": [{"product_id": str(uuid.uuid4()), "quantity": 1}]}
    assert (await orders.client.post("/orders", json=unknown, headers=ALICE)).status_code == 422

    counted = funnel((await orders.client.get("/metrics")).text)
    assert counted == {"placed": 2, "confirmed": 1, "rejected": 1, "cancelled": 1}


async def test_the_funnel_counts_nothing_for_a_transaction_rolled_back(
    orders: OrdersHarness,
) -> None:
    registry, counting = CollectorRegistry(), OrderFunnel()
    counting.bind(registry)
    async with orders.database.unit_of_work() as uow:
        counting.count_on_commit(uow, "placed")  # left without commit: rolled back
    async with orders.database.unit_of_work() as uow:
        counting.count_on_commit(uow, "confirmed")
        await uow.commit()
    counted = funnel(generate_latest(registry).decode())
    assert counted == {"placed": 0, "confirmed": 1, "rejected": 0, "cancelled": 0}
