"""The orders service's composition root, and the notification worker's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from urllib.parse import urlsplit

import structlog
from fastapi import FastAPI

from mercato.auth.contracts import UserRegistered
from mercato.messaging import (
    MESSAGING_MIGRATIONS,
    ConsumerGroups,
    MessagingRuntime,
    Outbox,
    SharedMessaging,
    build_consumer,
    messaging_hook,
)
from mercato.orders.api import router
from mercato.orders.catalogue import Catalogue, ProductsCatalogue
from mercato.orders.contracts import OrderConfirmed, OrderRejected
from mercato.orders.funnel import OrderFunnel
from mercato.orders.idempotency import IdempotencyPolicy
from mercato.orders.notifications import MailSender, notification_handlers
from mercato.orders.saga import saga_handlers
from mercato.orders.service import OrdersService
from mercato.platform.app import LifespanHook, ServiceContext, create_service_app
from mercato.platform.http import (
    ClientPolicy,
    ServiceClients,
    open_service_clients,
)
from mercato.platform.mail import Mailer, mailer_from_settings
from mercato.platform.migrations import MigrationHistory
from mercato.platform.observability import BreakerStates
from mercato.platform.resilience import BreakerState, CircuitBreaker
from mercato.platform.shutdown import pause, time_left, wait_ended
from mercato.platform.telemetry import Tracing
from mercato.products.contracts import StockRejected, StockReserved
from mercato.settings import Settings, load_settings

log = structlog.stdlib.get_logger("mercato.orders")

MIGRATIONS = [MigrationHistory("mercato.orders:migrations"), MESSAGING_MIGRATIONS]
#: The events the orders service consumes: the saga's replies (``saga_handlers``) and, in
#: the notification worker's group, what is mailed (``notification_handlers``).
CONSUMER_GROUPS: ConsumerGroups = {
    "orders": (StockReserved.event_type, StockRejected.event_type),
    "notifications": (
        UserRegistered.event_type,
        OrderConfirmed.event_type,
        OrderRejected.event_type,
    ),
}


def client_policy(settings: Settings) -> ClientPolicy:
    return ClientPolicy(
        timeout=settings.service_call_timeout,
        connect_timeout=settings.service_call_connect_timeout,
        retries=settings.service_call_retries,
        backoff=settings.service_call_backoff,
        backoff_max=settings.service_call_backoff_max,
        failure_threshold=settings.circuit_failure_threshold,
        reset_timeout=settings.circuit_reset_timeout,
    )


def orders_runtime(
    outbox: Outbox, funnel: OrderFunnel, catalogue: Catalogue | None = None
) -> LifespanHook:
    """Start-up of the orders service: the products client (unless a ``catalogue`` is given,
    as tests do), the use cases (announcing through ``outbox``, counting in ``funnel``),
    and the periodic pruning of expired idempotency keys."""

    @asynccontextmanager
    async def run(app: FastAPI, context: ServiceContext) -> AsyncIterator[None]:
        settings = Settings.of(context.settings)
        upstreams = {"products": settings.service_url("products")}
        clients = ServiceClients(
            upstreams,
            policy=client_policy(settings),
            pool_size=settings.service_call_pool_size,
            trace_configs=context.tracing.http_trace_configs(),
        )
        async with open_service_clients(clients):
            _export_breakers(context, clients.breakers, upstreams)
            funnel.bind(context.registry)
            service = OrdersService(
                context.db,
                catalogue or ProductsCatalogue(clients["products"]),
                outbox,
                policy=IdempotencyPolicy(
                    ttl=timedelta(seconds=settings.idempotency_key_ttl),
                    lock_timeout=timedelta(seconds=settings.idempotency_lock_timeout),
                ),
                funnel=funnel,
            )
            app.state.orders = service
            stop_pruning = asyncio.Event()
            pruner = asyncio.create_task(
                _prune_until(stop_pruning, service, settings.idempotency_prune_interval),
                name="orders-idempotency-pruner",
            )
            try:
                yield
            finally:
                stop_pruning.set()
                await wait_ended(
                    [pruner],
                    within=settings.graceful_timeout,
                    what="pruning expired idempotency keys",
                )

    return run


async def _prune_until(stop: asyncio.Event, service: OrdersService, interval: float) -> None:
    """Prune expired idempotency keys every ``interval`` seconds until ``stop`` is set."""
    while not stop.is_set():
        try:
            if pruned := await service.prune_idempotency_keys():
                log.info("expired idempotency keys pruned", count=pruned)
        except Exception:  # the database may be away for a while; try again next time
            log.warning("idempotency key pruning failed", exc_info=True)
        await pause(interval, stop)


def _export_breakers(
    context: ServiceContext, breakers: dict[str, CircuitBreaker], urls: dict[str, str]
) -> None:
    """``upstream_circuit_state`` of each upstream's breaker; a change is logged too."""
    states = BreakerStates(context.registry, context.service)
    for name, breaker in breakers.items():
        states.track(name, urlsplit(urls[name]).netloc, breaker)
        breaker.add_listener(_log_change)
    context.before_scrape.append(states.refresh)


def _log_change(breaker: CircuitBreaker, old: BreakerState, new: BreakerState) -> None:
    log.warning("circuit breaker changed", upstream=breaker.name, old=old.value, new=new.value)


def notifications_beside_saga(settings: Settings, mailer: Mailer | None = None) -> LifespanHook:
    """The ``notifications`` consumer group and its :class:`MailSender`, on the broker the
    service's messaging runtime already opened (entered after ``messaging_hook``): one relay,
    two groups in the orders service, or this group alone under ``mercato worker``. Mail goes
    through ``mailer`` (tests pass a fake), else the one of the settings."""
    outgoing = MailSender(
        mailer or mailer_from_settings(settings),
        retry_backoff=settings.messaging_retry_backoff,
        retry_backoff_max=settings.messaging_retry_backoff_max,
        retention=settings.inbox_retention,
    )
    handlers = notification_handlers(outgoing, sender=settings.mail_from)

    @asynccontextmanager
    async def run(app: FastAPI, context: ServiceContext) -> AsyncIterator[None]:
        runtime: MessagingRuntime = app.state.messaging
        consumer = build_consumer(context, handlers, runtime.broker)
        outgoing.start(context.db)  # first: it sends what an earlier run left unsent
        try:
            runtime.attach(consumer)  # counted in drain() and in /readyz's consumers check
            context.probes["consumers"] = runtime.check_consumers  # messaging_hook removes it
            await consumer.start()
            app.state.notifications = consumer
            yield
        finally:
            deadline = asyncio.get_running_loop().time() + settings.graceful_timeout
            runtime.detach(consumer)
            await consumer.stop(settings.graceful_timeout)
            await outgoing.stop(time_left(deadline))

    return run


def create_app(
    settings: Settings | None = None,
    *,
    catalogue: Catalogue | None = None,
    mailer: Mailer | None = None,
    shared: SharedMessaging | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    """The orders service (``catalogue`` and ``mailer``: fakes a test passes); ``shared``
    and ``tracing``: what it shares with the deployment's other services."""
    settings = settings or load_settings()
    shared = shared or SharedMessaging(CONSUMER_GROUPS)
    outbox = Outbox("orders")
    funnel = OrderFunnel()
    hooks: list[LifespanHook] = [
        orders_runtime(outbox, funnel, catalogue),
        messaging_hook(outbox, saga_handlers(outbox, funnel), shared),
    ]
    if settings.notifications_in_process:
        hooks.append(notifications_beside_saga(settings, mailer))
    return create_service_app(
        settings,
        "orders",
        title="Mercato orders service",
        description="Orders and the order saga.",
        routers=[router],
        migrations=MIGRATIONS,
        hooks=hooks,
        tracing=tracing,
    )


def create_worker_app(
    settings: Settings | None = None,
    *,
    shared: SharedMessaging | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    """The notification worker on its own (``mercato worker``): no orders routes, only
    ``/healthz``, ``/readyz`` and ``/metrics`` beside the consumer (and the relay of the
    orders outbox). Run the orders service with ``NOTIFICATIONS_IN_PROCESS=false`` then."""
    settings = settings or load_settings()
    return create_service_app(
        settings,
        "orders",
        title="Mercato notification worker",
        description="Mails customers when their orders are confirmed or rejected.",
        migrations=MIGRATIONS,
        hooks=[
            messaging_hook(Outbox("orders"), shared=shared or SharedMessaging(CONSUMER_GROUPS)),
            notifications_beside_saga(settings),
        ],
        tracing=tracing,
    )
