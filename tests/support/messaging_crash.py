"""A producer (and optionally a consumer) that kills itself right after committing events.

Run as a script by the fault tests::

    python tests/support/messaging_crash.py '<json settings>' COUNT [--with-consumer]

It starts the producer app (and the consumer app, as ``mercato up`` would), commits COUNT
events one transaction each, prints ``committed COUNT`` and SIGKILLs itself: whatever the
relay had not yet sent (or, on the memory broker, the consumer had not yet handled) is
left behind in the outbox, to be sent by the next process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from contextlib import AsyncExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mercato.messaging import in_process_broker
from support.messaging_apps import (
    Behaviour,
    consumer_app,
    messaging_settings,
    producer_app,
    publish_things,
)


async def main(overrides: dict[str, object], count: int, with_consumer: bool) -> None:
    settings = messaging_settings(**overrides)
    broker = in_process_broker(settings)  # memory: the apps share it
    apps = [producer_app(settings, broker=broker)]
    if with_consumer:
        apps.insert(0, consumer_app(settings, Behaviour(delay=0.01), broker=broker))
    async with AsyncExitStack() as stack:
        for app in apps:
            await stack.enter_async_context(app.router.lifespan_context(app))
        await publish_things(apps[-1].state.context.db, range(count))
        print(f"committed {count}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1]), int(sys.argv[2]), "--with-consumer" in sys.argv))
