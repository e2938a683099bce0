"""The composition root every service shares: ``create_service_app(settings, ...)``.

Everything with a connection (database engine, cache client, broker, HTTP clients) is made
in the lifespan and closed there; nothing is created at import time. A service adds its
routes and its own start-up steps (``hooks``) and gets, for free: problem+json errors, the
request-id middleware with access log and metrics, the request-header limit (431),
an OpenAPI document that names them (:mod:`mercato.platform.openapi`),
``/healthz``, ``/readyz`` (503 while the schema is behind the migrations) and ``/metrics``
(for ``METRICS_ALLOWED_NETWORKS`` only), in every profile; with tracing on, spans of its
requests and statements (:mod:`~mercato.platform.telemetry`); with ``SENTRY_DSN``, reports of
its unhandled errors (:mod:`~mercato.platform.error_reporting`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from prometheus_client import CollectorRegistry
from starlette.middleware import Middleware

from mercato.platform.cache import Cache, create_cache
from mercato.platform.db import Database
from mercato.platform.edge import HeaderLimitMiddleware
from mercato.platform.error_reporting import ErrorReporter
from mercato.platform.errors import install_error_handlers
from mercato.platform.middleware import BodyLimitMiddleware, RequestContextMiddleware
from mercato.platform.migrations import Heads, MigrationHistory, unapplied, upgrade
from mercato.platform.net import TrustedProxies
from mercato.platform.observability import (
    HttpMetrics,
    MetricsAccess,
    Probe,
    ProbeFailed,
    health_router,
)
from mercato.platform.openapi import install_problem_docs
from mercato.platform.security.dependencies import document_pasted_token
from mercato.platform.security.tokens import TokenVerifier, token_verifier
from mercato.platform.settings import SharedSettings
from mercato.platform.shutdown import bounded
from mercato.platform.telemetry import ServiceTracing, Tracing
from mercato.platform.tracing import TraceContextMiddleware

log = structlog.stdlib.get_logger("mercato.app")


@dataclass
class ServiceContext:
    """What one running service holds: its settings and its adapters."""

    service: str
    settings: SharedSettings
    registry: CollectorRegistry
    #: Spans of this service (a no-op when tracing is off): HTTP sessions, messaging.
    tracing: ServiceTracing
    #: Reports failures to Sentry; None when error reporting is off.
    errors: ErrorReporter | None = None
    database: Database | None = None
    cache: Cache | None = None
    #: Verifies bearer access tokens (``CurrentUser``, ``AdminUser``).
    tokens: TokenVerifier | None = None
    probes: dict[str, Probe] = field(default_factory=dict)
    #: Which backend serves each concern ("database": "postgresql"...), shown by /readyz.
    backends: dict[str, str] = field(default_factory=dict)
    #: Run before each /metrics answer, to bring gauges read at scrape time up to date.
    before_scrape: list[Callable[[], None]] = field(default_factory=list)

    @property
    def db(self) -> Database:
        if self.database is None:
            raise RuntimeError(f"the {self.service} service has no database")
        return self.database


#: A service's own start-up step: entered after the platform's adapters exist, exited first.
LifespanHook = Callable[[FastAPI, ServiceContext], AbstractAsyncContextManager[None]]


def open_database(settings: SharedSettings, service: str) -> Database:
    return Database(
        settings.database_url_for(service),
        schema=service,
        pool_size=settings.database_pool_size,
        echo=settings.database_echo,
    )


def schema_probe(service: str, database: Database, heads: list[Heads]) -> Probe:
    """A readiness check that fails while ``database`` is behind the service's migrations."""

    async def probe() -> None:
        behind = await unapplied(database, heads)
        if behind:
            names = ", ".join(history.script_location for history in behind)
            raise ProbeFailed(
                f"the {service} schema is behind its migrations ({names}); run `mercato migrate`"
            )

    return probe


def metrics_access(settings: SharedSettings, *, believe_internal_proxies: bool) -> MetricsAccess:
    """Who may scrape a service: every service believes ``TRUSTED_PROXIES`` about the
    client's address; a service behind the gateway (``believe_internal_proxies``) also
    ``INTERNAL_PROXIES``."""
    proxies = list(settings.trusted_proxies)
    if believe_internal_proxies:
        proxies += settings.internal_proxies
    return MetricsAccess(settings.metrics_allowed_networks, TrustedProxies(proxies))


def create_service_app(
    settings: SharedSettings,
    service: str,
    *,
    title: str,
    description: str = "",
    routers: Sequence[APIRouter] = (),
    migrations: Sequence[MigrationHistory] = (),
    hooks: Sequence[LifespanHook] = (),
    uses_database: bool = True,
    own_openapi: bool = True,
    inner_middleware: Sequence[Middleware] = (),
    believe_internal_proxies: bool = True,
    innermost_middleware: Sequence[Middleware] = (),
    tracing: Tracing | None = None,
) -> FastAPI:
    """One service's app. ``own_openapi=False`` leaves out FastAPI's ``/openapi.json`` and
    ``/docs`` (the gateway serves merged ones); ``inner_middleware`` runs inside the
    request-id middleware (outermost first), so that its answers carry the request id;
    ``believe_internal_proxies=False`` (the front door) believes only ``TRUSTED_PROXIES``
    about a scraping client's address.
    ``innermost_middleware`` runs inside all of the platform's, next to the routes.
    ``tracing`` is the process's (whoever runs several services shares one); without it
    the service makes its own from the settings. Its spans are sent when it stops."""
    registry = CollectorRegistry(auto_describe=True)
    process_tracing = Tracing.from_settings(settings) if tracing is None else tracing
    service_tracing = process_tracing.service(service)
    errors = ErrorReporter.from_settings(settings, service)

    async def send_spans() -> None:
        # A flush, not a shutdown: the processor may be shared, or the app started again.
        await asyncio.to_thread(process_tracing.flush, settings.graceful_timeout)

    async def flush_errors() -> None:
        assert errors is not None
        await errors.flush(settings.graceful_timeout)

    async def closing(close: Callable[[], Awaitable[None]], what: str) -> None:
        # Bounded: under `mercato serve` nothing above this lifespan has a deadline.
        await bounded(
            close(), within=settings.graceful_timeout, what=f"closing the {service} {what}"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        context = ServiceContext(
            service=service,
            settings=settings,
            registry=registry,
            tracing=service_tracing,
            errors=errors,
        )
        app.state.context = context
        app.state.probes = context.probes
        app.state.backends = context.backends
        app.state.before_scrape = context.before_scrape
        async with AsyncExitStack() as stack:
            if process_tracing.enabled:
                stack.push_async_callback(closing, send_spans, "spans")
            if errors is not None:
                errors.start()
                stack.push_async_callback(closing, flush_errors, "error reports")
            if uses_database:
                context.database = open_database(settings, service)
                service_tracing.instrument_engine(context.database.engine)
                stack.push_async_callback(closing, context.database.dispose, "database")
                if settings.auto_migrate:
                    await upgrade(context.database, list(migrations))
                context.probes["database"] = context.database.ping
                if migrations:
                    heads = [Heads.of(history) for history in migrations]
                    context.probes["schema"] = schema_probe(service, context.database, heads)
                context.backends["database"] = context.database.url.get_backend_name()
            context.cache = create_cache(
                redis_url=settings.redis_url,
                namespace=service,
                max_entries=settings.cache_max_entries,
                default_ttl=settings.cache_default_ttl,
            )
            stack.push_async_callback(closing, context.cache.close, "cache")
            context.probes["cache"] = context.cache.ping
            context.tokens = token_verifier(
                settings, trace_configs=service_tracing.http_trace_configs()
            )
            stack.push_async_callback(closing, context.tokens.close, "token verifier")
            context.backends["cache"] = "redis" if settings.redis_url else "memory"
            for hook in hooks:
                await stack.enter_async_context(hook(app, context))
            log.info("service ready", service=service)
            yield
            log.info("service stopping", service=service)

    docs = bool(settings.docs_enabled) and own_openapi
    app = FastAPI(
        title=title,
        description=description,
        version="1.0.0",
        lifespan=lifespan,
        openapi_url="/openapi.json" if own_openapi else None,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        debug=False,
        # Starlette keeps these innermost: add_middleware below puts each one outside them.
        middleware=list(innermost_middleware),
        # Server spans, named by route template, outside all middleware; off: none at all.
        telemetry=service_tracing.fastapi_config(),
    )
    install_error_handlers(app, expose_internals=settings.environment == "development")
    install_problem_docs(app, document_pasted_token)
    access = metrics_access(settings, believe_internal_proxies=believe_internal_proxies)
    app.include_router(health_router(service, registry, access))
    for router in routers:
        app.include_router(router)
    # add_middleware puts each one outside those before it: the last added is outermost.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.service_max_body_size)
    app.add_middleware(HeaderLimitMiddleware, limit=settings.max_header_bytes)
    for inner in reversed(inner_middleware):
        app.add_middleware(inner.cls, *inner.args, **inner.kwargs)
    app.add_middleware(
        RequestContextMiddleware,
        service=service,
        metrics=HttpMetrics(registry, service),
        log_requests=settings.access_log,
        expose_errors=settings.environment == "development",
        report_error=None if errors is None else errors.capture,
    )
    app.add_middleware(TraceContextMiddleware)  # outermost: events carry the traceparent
    return app


async def get_context(request: Request) -> ServiceContext:
    # async on purpose: FastAPI runs a plain `def` dependency in the thread pool, which
    # costs more than the lookup itself on every request.
    context: ServiceContext = request.app.state.context
    return context


Context = Annotated[ServiceContext, Depends(get_context)]
