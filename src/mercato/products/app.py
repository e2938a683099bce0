"""The products service's composition root."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import structlog
from fastapi import FastAPI
from prometheus_client import Counter

from mercato.messaging import (
    MESSAGING_MIGRATIONS,
    Broadcast,
    ConsumerGroups,
    Outbox,
    SharedMessaging,
    messaging_hook,
)
from mercato.orders.contracts import OrderCancelled, OrderPlaced
from mercato.platform.app import LifespanHook, ServiceContext, create_service_app, open_database
from mercato.platform.cache import MemoryCache, create_cache
from mercato.platform.migrations import MigrationHistory, upgrade
from mercato.platform.shutdown import pause, wait_ended
from mercato.platform.telemetry import Tracing
from mercato.products.api import router
from mercato.products.caching import INVALIDATION_CHANNEL, CatalogueCache
from mercato.products.demo import demo_catalogue
from mercato.products.service import catalogue_size, seed_catalogue, stock_handlers
from mercato.settings import Settings, load_settings

log = structlog.stdlib.get_logger("mercato.products")

MIGRATIONS = [MigrationHistory("mercato.products:migrations"), MESSAGING_MIGRATIONS]
#: The events the products service consumes (``stock_handlers``): its half of the saga.
CONSUMER_GROUPS: ConsumerGroups = {
    "products": (OrderPlaced.event_type, OrderCancelled.event_type),
}

#: How long a shutdown waits for a connection attempt to Redis in progress (its connect
#: timeout is 2 s) before cancelling it.
CONNECT_BOUND = 3.0


def should_seed(settings: Settings) -> bool:
    """``SEED_DEMO_CATALOGUE``, by default on in development only."""
    if settings.seed_demo_catalogue is None:
        return settings.environment == "development"
    return settings.seed_demo_catalogue


async def listen_for_invalidations(
    url: str | None,
    catalogue: CatalogueCache,
    on_listening: Callable[[], None],
    opened: list[Broadcast],
    stop: asyncio.Event,
) -> None:
    """Subscribe to other instances' invalidations, retrying until Redis answers (a cache
    outage at start-up must not keep the service down) or ``stop`` is set; then call
    ``on_listening``. The subscribed broadcast is appended to ``opened`` for the caller to
    close."""
    delay = 0.5
    while not stop.is_set():
        broadcast = Broadcast.from_url(url)
        try:
            await broadcast.start()
            await broadcast.subscribe(INVALIDATION_CHANNEL, catalogue.on_remote_invalidation)
        except Exception as exc:  # any failure to connect: a fresh client later
            await broadcast.close()
            log.warning("cache invalidations not heard yet; retrying", error=type(exc).__name__)
            await pause(delay, stop)
            delay = min(delay * 2, 10.0)
            continue
        opened.append(broadcast)
        on_listening()
        return


def catalogue_hook(catalogue: CatalogueCache, outbox: Outbox) -> LifespanHook:
    """Bind the read cache's layers and the invalidation broadcast; seed an empty
    catalogue if asked to."""

    @asynccontextmanager
    async def hook(app: FastAPI, context: ServiceContext) -> AsyncIterator[None]:
        settings = Settings.of(context.settings)
        reads = Counter(
            "products_cache_reads_total",
            "Catalogue reads by outcome: local or shared (cache hits), miss, bypass "
            "(cache off or unavailable).",
            ["outcome"],
            registry=context.registry,
        )
        catalogue.on_read = lambda outcome: reads.labels(outcome).inc()
        publisher = Broadcast.from_url(settings.redis_url)
        await publisher.start()  # no I/O yet; a failed publish is logged, never raised
        opened: list[Broadcast] = [publisher]

        async def announce(payload: str) -> int:
            return await publisher.publish(INVALIDATION_CHANNEL, payload)

        if settings.redis_url:
            # Redis is shared. A local layer in front of it is only safe once this instance
            # hears the others' invalidations, so it is switched on when that starts.
            catalogue.bind(None, context.cache, announce)
            local = (
                MemoryCache("products", max_entries=settings.cache_max_entries)
                if settings.products_local_cache_ttl > 0
                else None
            )

            def on_listening() -> None:
                catalogue.bind(local, context.cache, announce)
        else:  # the memory cache is this instance's own

            def on_listening() -> None:
                catalogue.bind(context.cache, None, announce)

        stop_listening = asyncio.Event()
        listening = asyncio.create_task(
            listen_for_invalidations(
                settings.redis_url, catalogue, on_listening, opened, stop_listening
            ),
            name="products-invalidations",
        )
        try:
            if settings.redis_url is None:
                await listening  # in process: immediate
            if should_seed(settings) and await catalogue_size(context.db) == 0:
                added = await seed_catalogue(context.db, outbox, catalogue, demo_catalogue())
                log.info("seeded the demo catalogue", products=added)
            yield
        finally:
            stop_listening.set()
            await wait_ended(
                [listening], within=CONNECT_BOUND, what="subscribing to cache invalidations"
            )
            catalogue.bind(None)
            for broadcast in opened:
                await broadcast.close()

    def start(app: FastAPI, context: ServiceContext) -> AbstractAsyncContextManager[None]:
        return hook(app, context)

    return start


def create_app(
    settings: Settings | None = None,
    *,
    shared: SharedMessaging | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    """The products service; ``shared`` and ``tracing``: what it shares with the
    deployment's others."""
    settings = settings or load_settings()
    outbox = Outbox("products")
    catalogue = CatalogueCache(
        enabled=settings.products_cache_enabled,
        ttl=settings.products_cache_ttl,
        local_ttl=settings.products_local_cache_ttl,
    )
    app = create_service_app(
        settings,
        "products",
        title="Mercato products service",
        description="The product catalogue and its stock.",
        routers=[router],
        migrations=MIGRATIONS,
        hooks=[
            catalogue_hook(catalogue, outbox),
            messaging_hook(
                outbox,
                stock_handlers(outbox, catalogue),
                shared or SharedMessaging(CONSUMER_GROUPS),
            ),
        ],
        tracing=tracing,
    )
    app.state.catalogue = catalogue
    app.state.outbox = outbox
    return app


async def seed_demo(settings: Settings) -> tuple[int, int]:
    """Migrate the products database and add the demo products it lacks (``mercato seed``).

    Returns (added, now in the catalogue). Idempotent by sku. A shared (Redis) cache is
    invalidated, so running instances list the new products at once.
    """
    database = open_database(settings, "products")
    cache = create_cache(redis_url=settings.redis_url, namespace="products")
    broadcast = Broadcast.from_url(settings.redis_url)
    await broadcast.start()

    async def announce(payload: str) -> int:
        return await broadcast.publish(INVALIDATION_CHANNEL, payload)

    catalogue = CatalogueCache(enabled=False)
    catalogue.bind(None, cache if settings.redis_url else None, announce)
    try:
        await upgrade(database, MIGRATIONS)
        # The events wait in the outbox for the products service's relay.
        added = await seed_catalogue(database, Outbox("products"), catalogue, demo_catalogue())
        total = await catalogue_size(database)
    finally:
        await broadcast.close()
        await cache.close()
        await database.dispose()
    return added, total
