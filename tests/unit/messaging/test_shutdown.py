"""Every background loop of the messaging package stops, whatever the timing of the stop.

On Python 3.11 ``asyncio.wait_for`` swallows a cancellation that lands in the loop iteration
in which its inner awaitable completes (cpython gh-86296). A loop idling in ``wait_for`` and
stopped by cancel-then-await then never ends: these tests arrange exactly that moment.
"""

from __future__ import annotations

import asyncio

import pytest

from mercato.messaging import MESSAGING_MIGRATIONS, OutboxRelay
from mercato.messaging.brokers import Delivery, OutgoingMessage
from mercato.messaging.brokers.memory import MemoryBroker
from mercato.platform.db import Database
from mercato.platform.migrations import upgrade
from support.waiting import eventually

pytestmark = pytest.mark.anyio


def waited_on(event: asyncio.Event) -> bool:
    """Whether a task is parked on ``event`` (the loop is idle)."""
    return bool(event._waiters)  # type: ignore[attr-defined]


async def finishes(awaitable: object, within: float = 5.0) -> bool:
    """Run ``awaitable`` as a task; whether it ended within ``within`` seconds (a hung one is
    cancelled, so the test fails instead of hanging)."""
    task = asyncio.ensure_future(awaitable)  # type: ignore[arg-type]
    done, _ = await asyncio.wait({task}, timeout=within)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=within)
        return False
    task.result()
    return True


def message(n: int) -> OutgoingMessage:
    return OutgoingMessage(ref=n, event_id=f"e{n}", event_type="test.thing_happened", body=b"{}")


async def test_a_relay_woken_as_it_is_stopped_still_stops() -> None:
    database = Database("sqlite+aiosqlite:///:memory:")
    await upgrade(database, [MESSAGING_MIGRATIONS])
    relay = OutboxRelay(database, MemoryBroker(), service="orders", poll_interval=3600)
    await relay.start()
    await eventually(lambda: waited_on(relay._wake))
    relay.wake()  # the idle wait completes in the very iteration the stop lands in
    assert await finishes(relay.stop()), "OutboxRelay.stop() never returned"
    await database.dispose()


async def test_a_memory_subscription_stops_even_when_a_handler_ignores_its_cancellation() -> None:
    broker = MemoryBroker()
    started, release = asyncio.Event(), asyncio.Event()

    async def stubborn(delivery: Delivery) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()  # goes on, as after a wait_for that swallowed the cancel
        await delivery.ack()

    subscription = await broker.subscribe("products", ["test.thing_happened"], stubborn, prefetch=2)
    await broker.publish([message(1)])
    await started.wait()
    assert await finishes(subscription.stop(0.05)), "the subscription's stop() never returned"
    release.set()  # let the abandoned handler end before the test's loop closes
    await eventually(lambda: subscription.group.in_flight == 0)
