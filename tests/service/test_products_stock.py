"""The stock half of the order saga: reserve all lines or none, release once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mercato.messaging import Outbox
from support.messaging import drain
from support.products import (
    RunningProducts,
    order_cancelled,
    order_placed,
    race_for_stock,
    release,
    reserve,
    running_products,
    stock_of,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def products() -> AsyncIterator[RunningProducts]:
    async with running_products() as running:
        yield running


async def test_every_line_is_reserved_and_announced(products: RunningProducts) -> None:
    a = await products.create(sku="A", name="a", stock=5)
    b = await products.create(sku="B", name="b", stock=2)
    order = order_placed("o-1", (b["id"], 1), (a["id"], 2), (b["id"], 1))
    assert await reserve(products, order) is True
    assert (await stock_of(products, a["id"]), await stock_of(products, b["id"])) == (3, 0)
    [event] = await products.events("stock.reserved")
    assert event["data"]["order_id"] == "o-1"
    assert sorted(event["data"]["items"], key=lambda line: line["product_id"]) == sorted(
        [{"product_id": a["id"], "quantity": 2}, {"product_id": b["id"], "quantity": 2}],
        key=lambda line: line["product_id"],
    )


async def test_one_short_line_reserves_nothing(products: RunningProducts) -> None:
    a = await products.create(sku="A", name="a", stock=5)
    b = await products.create(sku="B", name="b", stock=1)
    before = (await products.client.get(f"/products/{a['id']}")).json()
    order = order_placed("o-2", (a["id"], 2), (b["id"], 3), ("no-such-product", 1))
    assert await reserve(products, order) is False
    assert (await stock_of(products, a["id"]), await stock_of(products, b["id"])) == (5, 1)
    assert (await products.client.get(f"/products/{a['id']}")).json() == before
    assert await products.events("stock.reserved") == []
    [event] = await products.events("stock.rejected")
    assert event["data"]["order_id"] == "o-2"
    assert event["data"]["reason"] == "insufficient stock"
    assert sorted(event["data"]["short"], key=lambda line: line["product_id"]) == sorted(
        [
            {"product_id": b["id"], "requested": 3, "available": 1},
            {"product_id": "no-such-product", "requested": 1, "available": 0},
        ],
        key=lambda line: line["product_id"],
    )


async def test_a_reservation_is_made_once_per_order(products: RunningProducts) -> None:
    a = await products.create(sku="A", name="a", stock=5)
    order = order_placed("o-3", (a["id"], 2))
    assert await reserve(products, order) is True
    assert await reserve(products, order) is None  # redelivered under another event id
    assert await stock_of(products, a["id"]) == 3
    assert len(await products.events("stock.reserved")) == 1


async def test_a_cancellation_releases_the_reserved_stock_once(products: RunningProducts) -> None:
    a = await products.create(sku="A", name="a", stock=5)
    await reserve(products, order_placed("o-4", (a["id"], 4)))
    cancel = order_cancelled("o-4", (a["id"], 4))
    assert await release(products, cancel) is True
    assert await release(products, cancel) is False
    assert await stock_of(products, a["id"]) == 5
    [event] = await products.events("stock.released")
    assert event["data"] == {"order_id": "o-4", "items": [{"product_id": a["id"], "quantity": 4}]}


async def test_cancelling_a_rejected_order_releases_nothing(products: RunningProducts) -> None:
    a = await products.create(sku="A", name="a", stock=1)
    await reserve(products, order_placed("o-5", (a["id"], 2)))
    assert await release(products, order_cancelled("o-5", (a["id"], 2))) is False
    assert await stock_of(products, a["id"]) == 1
    assert await products.events("stock.released") == []


async def test_a_cancellation_that_arrives_first_blocks_the_late_placement(
    products: RunningProducts,
) -> None:
    a = await products.create(sku="A", name="a", stock=5)
    assert await release(products, order_cancelled("o-6", (a["id"], 2))) is False
    assert await reserve(products, order_placed("o-6", (a["id"], 2))) is None
    assert await stock_of(products, a["id"]) == 5
    assert await products.events("stock.reserved") == []


async def test_a_bad_quantity_is_rejected_not_retried(products: RunningProducts) -> None:
    a = await products.create(sku="A", name="a", stock=5)
    assert await reserve(products, order_placed("o-7", (a["id"], 0))) is False
    [event] = await products.events("stock.rejected")
    assert event["data"]["reason"] == "invalid quantity"
    assert await stock_of(products, a["id"]) == 5


async def test_a_reservation_is_visible_to_the_next_read(products: RunningProducts) -> None:
    a = await products.create(sku="A", name="a", stock=5)
    url = f"/products/{a['id']}"
    etag = (await products.client.get(url)).headers["etag"]
    await products.client.get("/products")
    await reserve(products, order_placed("o-8", (a["id"], 2)))
    after = await products.client.get(url, headers={"If-None-Match": etag})
    assert after.status_code == 200
    assert after.json()["stock"] == 3
    assert (await products.client.get("/products")).json()["items"][0]["stock"] == 3
    await release(products, order_cancelled("o-8", (a["id"], 2)))
    assert (await products.client.get(url)).json()["stock"] == 5


async def test_the_saga_runs_through_the_broker(products: RunningProducts) -> None:
    """order.placed and order.cancelled reach the handlers through the (memory) broker."""
    a = await products.create(sku="A", name="a", stock=3)
    async with products.context.db.unit_of_work() as uow:
        await Outbox("orders").publish(uow, order_placed("o-9", (a["id"], 2)), key="o-9")
        await uow.commit()
    await drain(products.app)
    assert await stock_of(products, a["id"]) == 1
    assert [e["data"]["order_id"] for e in await products.events("stock.reserved")] == ["o-9"]
    async with products.context.db.unit_of_work() as uow:
        await Outbox("orders").publish(uow, order_cancelled("o-9", (a["id"], 2)), key="o-9")
        await uow.commit()
    await drain(products.app)
    assert await stock_of(products, a["id"]) == 3
    assert len(await products.events("stock.released")) == 1


async def test_concurrent_orders_never_oversell_on_sqlite(tmp_path: Path) -> None:
    """A file database, so that writers really contend (BEGIN IMMEDIATE, WAL)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'products.db'}"
    async with running_products(products_database_url=url) as products:
        await race_for_stock(products, orders=25)
