"""The products service on all the real servers at once: PostgreSQL, Redis, RabbitMQ."""

from __future__ import annotations

import uuid

import pytest

from mercato.messaging import Outbox
from support.messaging import drain
from support.products import order_cancelled, order_placed, running_products, stock_of

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_the_stock_saga_over_rabbitmq_with_a_redis_cache(
    postgres_url: str, redis_url: str, broker_server_url: str
) -> None:
    settings = {
        "database_url": postgres_url,
        "redis_url": redis_url.rsplit("/", 1)[0] + "/11",
        "broker_url": broker_server_url,
        "messaging_exchange": f"mercato.test.{uuid.uuid4().hex[:10]}",
    }
    async with running_products(**settings) as products:
        await products.catalogue.invalidate()
        product = await products.create(sku="RMQ", name="Rabbit", stock=4)
        url = f"/products/{product['id']}"
        assert (await products.client.get(url)).json()["stock"] == 4  # now cached in Redis
        async with products.context.db.unit_of_work() as uow:
            await Outbox("orders").publish(uow, order_placed("rmq-1", (product["id"], 3)))
            await Outbox("orders").publish(uow, order_placed("rmq-2", (product["id"], 2)))
            await uow.commit()
        await drain(products.app, within=30)
        assert await stock_of(products, product["id"]) in {1, 2}  # one of the two fits
        assert len(await products.events("stock.reserved")) == 1
        assert len(await products.events("stock.rejected")) == 1
        shown = (await products.client.get(url)).json()["stock"]
        assert shown == await stock_of(products, product["id"])  # the cache was invalidated

        [reserved] = await products.events("stock.reserved")
        order_id = reserved["data"]["order_id"]
        quantity = reserved["data"]["items"][0]["quantity"]
        async with products.context.db.unit_of_work() as uow:
            await Outbox("orders").publish(
                uow, order_cancelled(order_id, (product["id"], quantity))
            )
            await uow.commit()
        await drain(products.app, within=30)
        assert (await products.client.get(url)).json()["stock"] == 4
