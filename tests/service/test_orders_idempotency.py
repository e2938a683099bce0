"""Idempotency-Key on POST /orders: replay, mismatch, in flight, concurrency, expiry."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from mercato.orders.models import IdempotencyKeyRow
from support.auth import auth_headers
from support.orders import OrdersHarness, ProductsStub

pytestmark = pytest.mark.anyio

ALICE = auth_headers("alice")


def keyed(key: str, headers: dict[str, str] = ALICE) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


async def test_a_retry_with_the_same_key_and_body_replays_the_first_answer(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    body = {"items": [{"product_id": products.add(), "quantity": 2}]}
    first = await orders.client.post("/orders", json=body, headers=keyed("k-1"))
    assert first.status_code == 201
    # the same data with keys in another order is the same request
    reordered = {"items": [{"quantity": 2, "product_id": body["items"][0]["product_id"]}]}
    second = await orders.client.post("/orders", json=reordered, headers=keyed("k-1"))
    assert second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await orders.orders() == 1
    assert await orders.outbox("order.placed") == 1
    assert products.requests == 1  # the replay did not even look at the catalogue


async def test_the_same_key_with_another_body_is_422(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    pid = products.add()
    first = await orders.client.post(
        "/orders", json={"items": [{"product_id": pid, "quantity": 1}]}, headers=keyed("k")
    )
    assert first.status_code == 201
    other = await orders.client.post(
        "/orders", json={"items": [{"product_id": pid, "quantity": 2}]}, headers=keyed("k")
    )
    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    assert "different request body" in other.json()["detail"]
    assert await orders.orders() == 1


async def test_keys_belong_to_one_user(orders: OrdersHarness, products: ProductsStub) -> None:
    body = {"items": [{"product_id": products.add(), "quantity": 1}]}
    alice = await orders.client.post("/orders", json=body, headers=keyed("shared"))
    bob = await orders.client.post(
        "/orders", json=body, headers=keyed("shared", auth_headers("bob"))
    )
    assert alice.status_code == bob.status_code == 201
    assert alice.json()["id"] != bob.json()["id"]
    assert bob.json()["user_id"] == "bob"


async def test_a_retry_while_the_first_is_in_flight_is_409(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    body = {"items": [{"product_id": products.add(), "quantity": 1}]}
    products.delay = 0.3  # the first request waits on the catalogue, holding the key
    first = asyncio.create_task(orders.client.post("/orders", json=body, headers=keyed("slow")))
    await products.requested.wait()
    second = await orders.client.post("/orders", json=body, headers=keyed("slow"))
    assert second.status_code == 409
    assert second.headers["content-type"] == "application/problem+json"
    assert second.headers["retry-after"] == "1"
    assert second.json()["type"] == "urn:mercato:problem:idempotency-key-in-flight"
    assert (await first).status_code == 201
    third = await orders.client.post("/orders", json=body, headers=keyed("slow"))
    assert third.status_code == 201
    assert third.json()["id"] == (await first).json()["id"]
    assert await orders.orders() == 1


async def test_fifty_concurrent_identical_requests_make_exactly_one_order(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    body = {"items": [{"product_id": products.add(), "quantity": 1}]}
    answers = await asyncio.gather(
        *(orders.client.post("/orders", json=body, headers=keyed("race")) for _ in range(50))
    )
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {201, 409}, statuses
    assert len({a.json()["id"] for a in answers if a.status_code == 201}) == 1
    assert await orders.orders() == 1
    assert await orders.outbox("order.placed") == 1
    assert await orders.keys() == 1


async def test_a_first_answer_that_was_an_error_is_replayed_too(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    body = {"items": [{"product_id": "unknown", "quantity": 1}]}
    first = await orders.client.post("/orders", json=body, headers=keyed("bad"))
    assert first.status_code == 422
    products.add("unknown")  # even if the product appears meanwhile
    second = await orders.client.post("/orders", json=body, headers=keyed("bad"))
    assert second.status_code == 422
    assert second.headers["content-type"] == "application/problem+json"
    assert second.json()["errors"] == first.json()["errors"]
    assert await orders.orders() == 0


async def test_a_replayed_error_carries_the_request_id_of_the_replaying_request(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    body = {"items": [{"product_id": "unknown", "quantity": 1}]}
    first = await orders.client.post(
        "/orders", json=body, headers={**keyed("bad-id"), "X-Request-ID": "first-request"}
    )
    assert first.status_code == 422
    assert first.json()["request_id"] == "first-request"
    second = await orders.client.post(
        "/orders", json=body, headers={**keyed("bad-id"), "X-Request-ID": "the-retry"}
    )
    assert second.status_code == 422
    assert second.headers["idempotent-replayed"] == "true"
    assert second.headers["x-request-id"] == "the-retry"
    assert second.json()["request_id"] == "the-retry"
    assert {**second.json(), "request_id": None} == {**first.json(), "request_id": None}


async def test_an_upstream_outage_frees_the_key_so_a_retry_can_succeed(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    pid = products.add()
    body = {"items": [{"product_id": pid, "quantity": 1}]}
    await products.stop()
    down = await orders.client.post("/orders", json=body, headers=keyed("outage"))
    assert down.status_code == 503
    assert down.headers["content-type"] == "application/problem+json"
    assert await orders.keys() == 0
    assert await orders.orders() == 0
    assert await orders.outbox() == 0
    await products.start()
    retry = await orders.client.post("/orders", json=body, headers=keyed("outage"))
    assert retry.status_code == 201
    assert await orders.orders() == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "ünïcode"])
async def test_a_malformed_key_is_422(
    orders: OrdersHarness, products: ProductsStub, key: str
) -> None:
    body = {"items": [{"product_id": products.add(), "quantity": 1}]}
    response = await orders.client.post(
        "/orders", json=body, headers={**ALICE, "Idempotency-Key": key.encode()}
    )
    assert response.status_code == 422
    assert await orders.orders() == 0


async def test_a_key_of_255_printable_characters_is_fine(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    body = {"items": [{"product_id": products.add(), "quantity": 1}]}
    key = ("Ab9 ~!" * 50)[:255]
    response = await orders.client.post("/orders", json=body, headers=keyed(key))
    assert response.status_code == 201


async def _age_keys(orders: OrdersHarness, **times: datetime) -> None:
    async with orders.database.unit_of_work() as uow:
        await uow.session.execute(update(IdempotencyKeyRow).values(**times))
        await uow.commit()


async def test_an_expired_key_starts_afresh_and_expired_keys_are_pruned(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    body = {"items": [{"product_id": products.add(), "quantity": 1}]}
    first = await orders.client.post("/orders", json=body, headers=keyed("old"))
    kept = await orders.client.post("/orders", json=body, headers=keyed("kept"))
    assert first.status_code == kept.status_code == 201
    past = datetime.now(UTC) - timedelta(seconds=1)
    async with orders.database.unit_of_work() as uow:
        await uow.session.execute(
            update(IdempotencyKeyRow).where(IdempotencyKeyRow.key == "old").values(expires_at=past)
        )
        await uow.commit()
    again = await orders.client.post("/orders", json=body, headers=keyed("old"))
    assert again.status_code == 201
    assert again.json()["id"] != first.json()["id"]  # a new request, past the 24 hours
    await _age_keys(orders, expires_at=past)
    assert await orders.app.state.orders.prune_idempotency_keys() == 2
    assert await orders.keys() == 0


async def test_keys_are_kept_at_least_24_hours(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    body = {"items": [{"product_id": products.add(), "quantity": 1}]}
    await orders.client.post("/orders", json=body, headers=keyed("day"))
    assert await orders.app.state.orders.prune_idempotency_keys() == 0
    async with orders.database.unit_of_work(read_only=True) as uow:
        row = await uow.session.get(IdempotencyKeyRow, 1)
        assert row is not None
        assert row.expires_at - row.created_at >= timedelta(hours=24)


async def test_a_cancelled_request_frees_its_key_and_a_stale_key_still_checks_the_body(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    body = {"items": [{"product_id": products.add(), "quantity": 1}]}
    products.delay = 0.3
    first = asyncio.create_task(orders.client.post("/orders", json=body, headers=keyed("dead")))
    await products.requested.wait()
    first.cancel()  # the request dies mid-way; its key is freed (or, after a crash, stale)
    with pytest.raises(asyncio.CancelledError):
        await first
    products.delay = 0
    # Simulate a crash that left the key in flight an hour ago.
    async with orders.database.unit_of_work() as uow:
        from mercato.orders.repository import IdempotencyRepository

        now = datetime.now(UTC) - timedelta(hours=1)
        await IdempotencyRepository(uow.session).claim(
            user_id="alice",
            key="crashed",
            fingerprint="0" * 64,
            now=now,
            expires_at=now + timedelta(days=1),
        )
        await uow.commit()
    # the fingerprint of the crashed request is another body: still 422, never a silent replay
    assert (
        await orders.client.post("/orders", json=body, headers=keyed("crashed"))
    ).status_code == 422
    retry = await orders.client.post("/orders", json=body, headers=keyed("dead"))
    assert retry.status_code == 201
    assert await orders.orders() == 1


async def test_a_key_left_in_flight_by_a_crash_is_retaken_after_the_lock_timeout(
    orders: OrdersHarness, products: ProductsStub
) -> None:
    from mercato.orders.domain import request_fingerprint
    from mercato.orders.repository import IdempotencyRepository
    from mercato.orders.schemas import PlaceOrder

    body = {"items": [{"product_id": products.add(), "quantity": 1}]}
    fingerprint = request_fingerprint(PlaceOrder.model_validate(body).model_dump(mode="json"))

    async def crashed_claim(key: str, age: timedelta) -> None:
        when = datetime.now(UTC) - age
        async with orders.database.unit_of_work() as uow:
            await IdempotencyRepository(uow.session).claim(
                user_id="alice",
                key=key,
                fingerprint=fingerprint,
                now=when,
                expires_at=when + timedelta(days=1),
            )
            await uow.commit()

    await crashed_claim("recent", timedelta(seconds=1))
    await crashed_claim("stale", timedelta(minutes=5))  # the lock timeout is 60 s
    assert (
        await orders.client.post("/orders", json=body, headers=keyed("recent"))
    ).status_code == 409
    retaken = await orders.client.post("/orders", json=body, headers=keyed("stale"))
    assert retaken.status_code == 201
    replay = await orders.client.post("/orders", json=body, headers=keyed("stale"))
    assert replay.json()["id"] == retaken.json()["id"]
    assert await orders.orders() == 1
