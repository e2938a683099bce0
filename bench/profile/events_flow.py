"""N events through outbox -> broker -> consumer, as scenario 5 (``bench/events.py``) runs
them: a producer app (the orders service's outbox and relay) and a consumer app (products'
inbox, a handler that records the event), file SQLite databases, one process. The events
are committed ``--per-tx`` per transaction, then the driver waits until every one was
handled; one "request" is one event.

    PYTHONPATH=tests:. .venv/bin/python -m bench.profile.events_flow -n 1000 --cprofile
    PYTHONPATH=tests:. .venv/bin/python -m bench.profile.events_flow -n 1000 --rabbitmq
    bench/profile/instructions.sh events_flow 1000 [--rabbitmq]

Without ``--cprofile`` it prints, per event, the statements each database ran by kind
(relay select, mark sent, inbox check and insert, ...), the commits, and the broker calls
(publish batches, acks). ``--rabbitmq`` uses this machine's RabbitMQ (``TEST_BROKER_URL``)
with a private exchange, deleted afterwards; publisher confirms on.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any

from sqlalchemy import event

from bench._stack import TEST_BROKER_URL, delete_topology
from bench.events import PER_TX, Recorder, apps, commit_events, settings_for
from mercato.platform.logging import configure_logging


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--requests", type=int, default=1000, help="measured events")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--per-tx", type=int, default=PER_TX)
    parser.add_argument("--rabbitmq", action="store_true", help="RabbitMQ, confirms on")
    parser.add_argument("--cprofile", action="store_true", help="print the top of cProfile")
    parser.add_argument("--dump", help="with --cprofile: also write the stats to this file")
    return parser.parse_args()


def statement_kind(sql: str) -> str:
    words = sql.split()
    verb = words[0].upper() if words else "?"
    for table in ("outbox", "inbox", "dead_letters"):
        if f" {table}" in sql or f'"{table}"' in sql:
            return f"{verb} {table}"
    return verb


class Counts:
    """Statements and commits per database, broker calls, by kind."""

    def __init__(self) -> None:
        self.on = False
        self.counter: Counter[str] = Counter()

    def add(self, what: str, n: int = 1) -> None:
        if self.on:
            self.counter[what] += n

    def watch_database(self, label: str, engine: Any) -> None:
        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def _statement(*args: Any) -> None:
            self.add(f"{label}: {statement_kind(args[2])}")

        @event.listens_for(engine.sync_engine, "commit")
        def _commit(_connection: Any) -> None:
            self.add(f"{label}: COMMIT")

    def watch_broker(self, broker: Any) -> None:
        publish = broker.publish

        async def counted_publish(messages: Any, settled: Any = None) -> None:
            self.add("broker: publish calls")
            self.add("broker: messages published", len(messages))
            await publish(messages, settled)

        broker.publish = counted_publish

    def report(self, events: int) -> None:
        print(f"per event ({events} events):")
        for what, count in sorted(self.counter.items()):
            print(f"  {what:45} {count / events:8.3f}")


async def main() -> None:
    options = arguments()
    configure_logging(service="bench", level="WARNING", fmt="console")
    exchange = f"profile-{uuid.uuid4().hex[:8]}"
    # The memory broker keeps what it publishes unsettled for its startup grace (for late
    # subscribers); the consumer here subscribes first, and the warm-up should not wait 5 s.
    extra: dict[str, Any] = {"messaging_startup_grace": 0.0}
    if options.rabbitmq:
        extra |= {"broker_url": TEST_BROKER_URL, "messaging_exchange": exchange}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            await flow(options, settings_for(tmp, "profile", **extra))
    finally:
        if options.rabbitmq:
            await delete_topology(exchange)


async def flow(options: argparse.Namespace, settings: Any) -> None:
    recorder, counts = Recorder(), Counts()
    producer, consumer = apps(settings, recorder)
    async with AsyncExitStack() as stack:
        for app in (consumer, producer):
            await stack.enter_async_context(app.router.lifespan_context(app))
        counts.watch_database("producer db", producer.state.context.db.engine)
        counts.watch_database("consumer db", consumer.state.context.db.engine)
        brokers = {
            id(a.state.messaging.broker): a.state.messaging.broker for a in (producer, consumer)
        }
        for broker in brokers.values():
            counts.watch_broker(broker)
        next_number = 0

        async def push(count: int) -> None:
            nonlocal next_number
            numbers = range(next_number, next_number + count)
            next_number += count
            recorder.expect(numbers)
            await commit_events(producer, numbers, options.per_tx)
            await asyncio.wait_for(recorder.done.wait(), 120)

        await push(options.warmup)
        profiler = cProfile.Profile() if options.cprofile else None
        counts.on = True
        started, cpu = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        await push(options.requests)
        if profiler is not None:
            profiler.disable()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        counts.on = False
        if profiler is not None:
            stats = pstats.Stats(profiler, stream=sys.stdout)
            if options.dump:
                stats.dump_stats(options.dump)
            print(f"{stats.total_calls / options.requests:.0f} Python calls per event")  # type: ignore[attr-defined]
            stats.sort_stats("cumulative").print_stats(50)
            stats.sort_stats("tottime").print_stats(30)
        counts.report(options.requests)
        per = 1e6 / options.requests
        print(
            f"{options.requests} events, {elapsed * per:.0f} us each (wall), {cpu * per:.0f} us CPU"
        )


if __name__ == "__main__":
    asyncio.run(main())
