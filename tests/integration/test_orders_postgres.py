"""Orders on PostgreSQL: the unique constraint, not a lock in this process, makes concurrent
identical requests produce one order; the guarded transitions hold under concurrency."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mercato.messaging import Envelope, Outbox
from mercato.orders.saga import confirm_order, reject_order
from mercato.products.contracts import ReservedLine, StockRejected, StockReserved
from support.auth import auth_headers
from support.orders import orders_client, products_stub

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

ALICE = auth_headers("alice")


async def test_fifty_concurrent_identical_requests_make_one_order_on_postgres(
    tmp_path: Path, postgres_url: str
) -> None:
    async with (
        products_stub() as products,
        orders_client(tmp_path, products.url, orders_database_url=postgres_url) as orders,
    ):
        assert orders.database.is_postgres
        body = {"items": [{"product_id": products.add(), "quantity": 1}]}
        headers = {**ALICE, "Idempotency-Key": "pg-race"}
        answers = await asyncio.gather(
            *(orders.client.post("/orders", json=body, headers=headers) for _ in range(50))
        )
        statuses = [a.status_code for a in answers]
        assert set(statuses) <= {201, 409}, statuses
        assert len({a.json()["id"] for a in answers if a.status_code == 201}) == 1
        assert await orders.orders() == 1
        assert await orders.outbox("order.placed") == 1
        replay = await orders.client.post("/orders", json=body, headers=headers)
        assert replay.status_code == 201
        assert replay.headers["idempotent-replayed"] == "true"


async def test_concurrent_contradicting_replies_settle_an_order_once_on_postgres(
    tmp_path: Path, postgres_url: str
) -> None:
    async with (
        products_stub() as products,
        orders_client(tmp_path, products.url, orders_database_url=postgres_url) as orders,
    ):
        body = {"items": [{"product_id": products.add(), "quantity": 1}]}
        order_id = (await orders.client.post("/orders", json=body, headers=ALICE)).json()["id"]

        async def deliver(confirm: bool) -> None:
            async with orders.database.unit_of_work() as uow:
                if confirm:
                    data: StockReserved | StockRejected = StockReserved(
                        order_id=order_id, items=[ReservedLine(product_id="p", quantity=1)]
                    )
                    await confirm_order(
                        Envelope[StockReserved](type=data.event_type, source="t", data=data),
                        uow,
                        Outbox("orders"),
                    )
                else:
                    data = StockRejected(order_id=order_id, reason="none left")
                    await reject_order(
                        Envelope[StockRejected](type=data.event_type, source="t", data=data),
                        uow,
                        Outbox("orders"),
                    )
                await uow.commit()

        await asyncio.gather(*(deliver(i % 2 == 0) for i in range(10)))
        status = await orders.status_of(order_id, ALICE)
        assert status in {"confirmed", "rejected"}
        settled = await orders.outbox("order.confirmed") + await orders.outbox("order.rejected")
        assert settled == 1


async def test_a_stale_in_flight_key_is_retaken_once_on_postgres(
    tmp_path: Path, postgres_url: str
) -> None:
    from datetime import UTC, datetime, timedelta

    from mercato.orders.domain import request_fingerprint
    from mercato.orders.repository import IdempotencyRepository
    from mercato.orders.schemas import PlaceOrder

    async with (
        products_stub() as products,
        orders_client(tmp_path, products.url, orders_database_url=postgres_url) as orders,
    ):
        body = {"items": [{"product_id": products.add(), "quantity": 1}]}
        fingerprint = request_fingerprint(PlaceOrder.model_validate(body).model_dump(mode="json"))
        when = datetime.now(UTC) - timedelta(minutes=5)
        async with orders.database.unit_of_work() as uow:
            await IdempotencyRepository(uow.session).claim(
                user_id="alice",
                key="stale",
                fingerprint=fingerprint,
                now=when,
                expires_at=when + timedelta(days=1),
            )
            await uow.commit()
        headers = {**ALICE, "Idempotency-Key": "stale"}
        answers = await asyncio.gather(
            *(orders.client.post("/orders", json=body, headers=headers) for _ in range(10))
        )
        assert {a.status_code for a in answers} <= {201, 409}
        assert len({a.json()["id"] for a in answers if a.status_code == 201}) == 1
        assert await orders.orders() == 1
