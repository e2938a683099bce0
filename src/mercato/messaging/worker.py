"""Running services' event workers without HTTP (``mercato worker --service S``).

A worker enters the lifespan of each service app it is given, which starts what the
service's ``messaging_hook`` declares (outbox relay, consumers) plus the database and
cache, and then waits for SIGINT/SIGTERM. No port is opened. Leaving the lifespans drains:
consumers finish what they hold, relays flush the outbox, within GRACEFUL_TIMEOUT and a
margin at most.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from contextlib import AsyncExitStack

from fastapi import FastAPI

from mercato.platform.logging import get_logger

log = get_logger("mercato.messaging.worker")

#: Besides GRACEFUL_TIMEOUT (shared by the consumers and the outbox flush), how long the
#: services' own closing (connections, engines) may take before the worker gives up.
STOP_MARGIN = 2.0
DEFAULT_GRACE = 10.0


async def run_headless(apps: Sequence[FastAPI], stop: asyncio.Event | None = None) -> None:
    """Run the lifespans of ``apps`` until ``stop`` is set (or a SIGINT/SIGTERM)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    try:
        async with AsyncExitStack() as stack:
            for app in apps:
                await stack.enter_async_context(app.router.lifespan_context(app))
            log.info("event worker running", apps=[app.title for app in apps])
            await stop.wait()
            log.info("event worker stopping")
            within = max(_graceful_timeout(app) for app in apps) + STOP_MARGIN
            try:
                async with asyncio.timeout(within):
                    await stack.aclose()
            except TimeoutError:
                log.warning("event worker gave up waiting for its services to stop", within=within)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _graceful_timeout(app: FastAPI) -> float:
    """The app's GRACEFUL_TIMEOUT (its lifespan's context holds its settings)."""
    context = getattr(app.state, "context", None)
    settings = getattr(context, "settings", None)
    return float(getattr(settings, "graceful_timeout", DEFAULT_GRACE))
