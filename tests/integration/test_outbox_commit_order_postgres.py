"""On PostgreSQL, outbox rows do not commit in the order of their sequence numbers: a slow
transaction takes ``seq`` 1, a fast one takes 2 and commits first. Both events must be sent.

Found by the Redis fault run of issue 17 (``tests/fault/test_dependency_outages.py``): on the
in-process broker, a ``stock.reserved`` committed by a products transaction that the outage
had slowed stayed unsent for good (``sent_at`` NULL, ``attempts`` 0) and its order stayed
``pending``. The relay of the in-process broker reads only rows above the highest ``seq`` it
had published, so a lower one committed later was never read.
"""

from __future__ import annotations

import pytest

from mercato.messaging import Outbox, in_process_broker
from support.messaging_apps import (
    Behaviour,
    ThingHappened,
    consumer_app,
    messaging_settings,
    producer_app,
    publish_things,
    running,
)
from support.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def test_an_event_committed_after_a_later_one_is_still_sent(postgres_url: str) -> None:
    settings = messaging_settings(
        orders_database_url=postgres_url, products_database_url=postgres_url
    )
    broker = in_process_broker(settings)  # memory: the apps share it
    behaviour = Behaviour()
    producer = producer_app(settings, broker=broker)
    consumer = consumer_app(settings, behaviour, broker=broker)
    async with running(consumer, producer):
        database = producer.state.context.db
        async with database.unit_of_work() as slow:
            await Outbox("orders").publish(slow, ThingHappened(n=1), key="1")  # the lower seq
            await publish_things(database, [2])  # a later seq, committed first

            async def second_handled() -> bool:
                return 2 in behaviour.calls

            await eventually(second_handled)
            await slow.commit()

        async def first_handled() -> bool:
            return 1 in behaviour.calls

        await eventually(first_handled, within=5.0)
