"""Running services' event workers without HTTP (``mercato worker --service S``).

A worker enters the lifespan of each service app it is given, which starts what the
service's ``messaging_hook`` declares (outbox relay, consumers) plus the database and
cache, and then waits for SIGINT/SIGTERM. No port is opened. Leaving the lifespans drains:
consumers finish what they hold, relays flush the outbox.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from contextlib import AsyncExitStack

from fastapi import FastAPI

from mercato.platform.logging import get_logger

log = get_logger("mercato.messaging.worker")


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
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
