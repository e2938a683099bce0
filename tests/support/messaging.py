"""Waiting for events to settle, for tests of services that publish or handle events.

::

    from support.messaging import drain

    async with app1.router.lifespan_context(app1), app2.router.lifespan_context(app2):
        ...  # make a request that publishes
        await drain(app1, app2)  # every outbox sent, every consumer group idle

``drain`` works on every backend (memory, RabbitMQ, Kafka): it wakes each app's outbox
relay and waits until, twice in a row, no app has an unsent outbox row and no consumer group
has a message queued, in flight or waiting to be retried. It raises ``TimeoutError`` with
what is still pending, so a test fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI

from mercato.messaging import MessagingRuntime


def runtime_of(app: FastAPI) -> MessagingRuntime:
    runtime: MessagingRuntime | None = getattr(app.state, "messaging", None)
    if runtime is None:
        raise RuntimeError("this app runs no messaging_hook (or its lifespan is not entered)")
    return runtime


async def pending_of(*apps: FastAPI) -> dict[str, int]:
    counts: dict[str, int] = {}
    for app in apps:
        runtime = runtime_of(app)
        runtime.relay.wake()
        try:
            pending = await runtime.pending()
        except Exception:  # the broker is reconnecting: not settled yet
            pending = -1
        counts[runtime.service] = counts.get(runtime.service, 0) + pending
    return counts


async def drain(*apps: FastAPI, within: float = 10.0, interval: float = 0.01) -> None:
    """Wait until every event published by ``apps`` was handled by their consumers."""
    deadline = time.monotonic() + within
    quiet = 0
    counts: dict[str, int] = {}
    while quiet < 2:
        counts = await pending_of(*apps)
        quiet = quiet + 1 if not any(counts.values()) else 0
        if time.monotonic() > deadline:
            raise TimeoutError(f"events still pending after {within}s: {counts}")
        await asyncio.sleep(interval)
