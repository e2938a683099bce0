"""Wiring: a service's composition root builds its :class:`~mercato.messaging.Outbox` and
hands it to its use cases, and ``messaging_hook(outbox, handlers)`` starts the service's
outbox relay and consumers in its lifespan; the same :class:`MessagingRuntime` runs under
``mercato worker``.

Who runs the processes chooses the broker: several services in one process on the memory
backend share one :class:`~mercato.messaging.brokers.memory.MemoryBroker`, created once
(:func:`in_process_broker`) and passed to each; otherwise each service connects on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI

from mercato.messaging.brokers import Broker, BrokerOptions, create_broker, in_process
from mercato.messaging.consumer import PAUSE_BACKOFF_MAX, Consumer, Handlers, backoff
from mercato.messaging.metrics import MessagingMetrics
from mercato.messaging.outbox import Outbox, OutboxRelay
from mercato.messaging.topology import ConsumerGroups
from mercato.platform.app import ServiceContext
from mercato.platform.logging import get_logger
from mercato.platform.migrations import MigrationHistory
from mercato.platform.settings import SharedSettings
from mercato.platform.shutdown import pause, time_left, wait_ended

log = get_logger("mercato.messaging")
#: The instrumentation scope of the event spans.
TRACER = "mercato.messaging"

#: The last send of the outbox gets at least this long, even when the consumers took all of
#: GRACEFUL_TIMEOUT (what it does not send is sent by the next start).
FLUSH_AT_LEAST = 0.5

MESSAGING_MIGRATIONS = MigrationHistory(
    "mercato.messaging:migrations", version_table="alembic_version_messaging"
)


def retry_delays(settings: SharedSettings) -> tuple[float, ...]:
    """The delay before each retry (attempt 1 -> 2, 2 -> 3, ...)."""
    return tuple(
        backoff(
            attempt,
            base=settings.messaging_retry_backoff,
            cap=settings.messaging_retry_backoff_max,
        )
        for attempt in range(1, settings.messaging_max_attempts)
    )


def broker_for(settings: SharedSettings, groups: ConsumerGroups | None = None) -> Broker:
    """A new broker for ``BROKER_URL``; on RabbitMQ it declares ``groups`` (every group of
    the deployment) before it publishes anything."""
    options = BrokerOptions(
        exchange=settings.messaging_exchange,
        queue_type=settings.messaging_queue_type,
        retry_delays=retry_delays(settings),
        startup_grace=settings.messaging_startup_grace,
        known_groups=groups or {},
    )
    return create_broker(settings.broker_url, options)


def in_process_broker(settings: SharedSettings) -> Broker | None:
    """The broker the services of one process share when ``BROKER_URL`` names no server
    (the memory broker: build it once, pass it to each); None when each service connects
    to the broker server on its own."""
    return broker_for(settings) if in_process(settings.broker_url) else None


@dataclass(frozen=True)
class SharedMessaging:
    """What whoever runs the services (``serving.py``, a test) hands each service's
    composition root: every consumer group of the deployment, which a connection to
    RabbitMQ declares before it publishes anything, and, for several services in one
    process on the memory backend, the one ``broker`` they share (None: each service
    connects to ``BROKER_URL`` on its own)."""

    groups: ConsumerGroups = field(default_factory=dict)
    broker: Broker | None = None


class ConsumersPaused(Exception):
    """A consumer group waits for an unavailable dependency (``/readyz``: "consumers")."""


@dataclass
class MessagingRuntime:
    """A service's broker connection, outbox relay and (when it handles events) consumer."""

    service: str
    broker: Broker
    relay: OutboxRelay
    outbox: Outbox
    consumer: Consumer | None = None
    #: More consumer groups a service runs on the same broker (see :meth:`attach`).
    extra_consumers: list[Consumer] = field(default_factory=list)

    def attach(self, consumer: Consumer) -> None:
        """Count another consumer group of this service in :meth:`pending` (and so in
        ``support.messaging.drain``); its owner still starts and stops it."""
        self.extra_consumers.append(consumer)

    def detach(self, consumer: Consumer) -> None:
        if consumer in self.extra_consumers:
            self.extra_consumers.remove(consumer)

    @property
    def consumers(self) -> list[Consumer]:
        return ([self.consumer] if self.consumer else []) + self.extra_consumers

    def paused(self) -> dict[str, str]:
        """The consumer groups of this service paused because a dependency is unavailable,
        each with why and for how long (empty when every group consumes)."""
        return {
            consumer.group: state
            for consumer in self.consumers
            if (state := consumer.pause_state()) is not None
        }

    async def check_consumers(self) -> None:
        """A readiness probe: raise :class:`ConsumersPaused` while a group is paused."""
        if paused := self.paused():
            raise ConsumersPaused("; ".join(f"{g} {why}" for g, why in sorted(paused.items())))

    async def pending(self) -> int:
        """Rows not yet sent plus messages this service's groups have not settled."""
        backlog, _ = await self.relay.backlog()
        for consumer in self.consumers:
            backlog += await consumer.pending()
        return backlog

    async def sample_lag(self, metrics: MessagingMetrics) -> None:
        """Set ``messaging_consumer_lag`` of each group to what its queue holds unsettled
        (the memory broker's queue, RabbitMQ's message counts, Kafka's end offsets minus
        the committed ones); a group the broker cannot tell about keeps its last sample."""
        for consumer in self.consumers:
            try:
                lag = await consumer.pending()
            except Exception as exc:  # the broker is away: the paused gauge says so
                log.debug(
                    "consumer lag not sampled", group=consumer.group, error=type(exc).__name__
                )
                continue
            metrics.consumer_lag.labels(self.service, consumer.group).set(lag)

    async def sample_lag_until(
        self, stop: asyncio.Event, metrics: MessagingMetrics, interval: float
    ) -> None:
        """:meth:`sample_lag` every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            await self.sample_lag(metrics)
            await pause(interval, stop)


def build_consumer(context: ServiceContext, handlers: Handlers, broker: Broker) -> Consumer:
    """The one way a service's consumer group is built: the settings' attempts, backoffs
    and prefetch, and the service's messaging metrics."""
    settings = context.settings
    return Consumer(
        handlers,
        context.db,
        broker,
        service=context.service,
        metrics=MessagingMetrics.of(context.registry),
        max_attempts=settings.messaging_max_attempts,
        retry_backoff=settings.messaging_retry_backoff,
        retry_backoff_max=settings.messaging_retry_backoff_max,
        pause_backoff_max=min(settings.messaging_retry_backoff_max, PAUSE_BACKOFF_MAX),
        prefetch=settings.messaging_prefetch,
        tracer=context.tracing.tracer(TRACER),
        errors=context.errors,
    )


@asynccontextmanager
async def run_messaging(
    context: ServiceContext,
    outbox: Outbox,
    handlers: Handlers | None = None,
    shared: SharedMessaging | None = None,
) -> AsyncIterator[MessagingRuntime]:
    """Run the relay that sends what ``outbox`` published and the consumer of ``handlers``,
    on the broker in ``shared`` (the process's, which owns it) or else on a broker of their
    own for ``BROKER_URL``, which declares the groups in ``shared``."""
    settings, service = context.settings, context.service
    metrics = MessagingMetrics.of(context.registry)
    shared = shared or SharedMessaging()
    broker, own_broker = shared.broker, shared.broker is None
    if broker is None:
        broker = broker_for(settings, shared.groups)
        await broker.start()
    relay = OutboxRelay(
        context.db,
        broker,
        service=outbox.source,
        metrics=metrics,
        batch_size=settings.outbox_batch_size,
        poll_interval=settings.outbox_poll_interval,
        retention=settings.outbox_retention,
        inbox_retention=settings.inbox_retention,
        tracer=context.tracing.tracer(TRACER),
    )
    consumer = None if handlers is None else build_consumer(context, handlers, broker)
    runtime = MessagingRuntime(service, broker, relay, outbox, consumer)
    stop_sampling = asyncio.Event()
    sampling: asyncio.Task[None] | None = None
    try:
        if consumer is not None:
            await consumer.start()
        outbox.relay = relay  # a commit that published wakes it
        await relay.start()
        sampling = asyncio.create_task(
            runtime.sample_lag_until(stop_sampling, metrics, settings.messaging_lag_interval),
            name=f"consumer-lag-{service}",
        )
        log.info(
            "messaging started",
            service=service,
            broker=broker.name,
            handles=handlers.event_types if handlers else [],
        )
        yield runtime
    finally:
        # Drain: stop taking messages, finish those in flight, flush the outbox, disconnect;
        # the first two share GRACEFUL_TIMEOUT, and every step is bounded.
        deadline = asyncio.get_running_loop().time() + settings.graceful_timeout
        stop_sampling.set()
        if sampling is not None:
            await wait_ended([sampling], within=1.0, what=f"sampling the {service} consumer lag")
        if consumer is not None:
            await consumer.stop(settings.graceful_timeout)
        outbox.relay = None
        await relay.stop(flush_timeout=max(time_left(deadline), FLUSH_AT_LEAST))
        if own_broker:
            await broker.close()


def messaging_hook(
    outbox: Outbox,
    handlers: Handlers | None = None,
    shared: SharedMessaging | None = None,
) -> Callable[[FastAPI, ServiceContext], AbstractAsyncContextManager[None]]:
    """A lifespan hook: the relay of the service's ``outbox``, its consumers (if
    ``handlers``), and the readiness probes ``broker`` and (with handlers) ``consumers``,
    which fails while a group is paused for an unavailable dependency. ``shared`` is as
    for :func:`run_messaging`. The runtime is on ``app.state.messaging``."""

    @asynccontextmanager
    async def hook(app: FastAPI, context: ServiceContext) -> AsyncIterator[None]:
        async with run_messaging(context, outbox, handlers, shared) as runtime:
            app.state.messaging = runtime
            context.probes["broker"] = runtime.broker.ping
            if runtime.consumer is not None:
                context.probes["consumers"] = runtime.check_consumers
            context.backends["broker"] = runtime.broker.name
            try:
                yield
            finally:
                context.probes.pop("broker", None)
                context.probes.pop("consumers", None)

    return hook
