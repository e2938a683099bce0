"""The gateway's composition root: the proxy with its guards, the security headers, CORS,
OpenAPI aggregation with Swagger UI, and readiness that aggregates the services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from fastapi import FastAPI
from starlette.middleware import Middleware

from mercato.gateway.guards import AccessGuard
from mercato.gateway.metrics import GatewayMetrics
from mercato.gateway.middleware import (
    AllowedHostsMiddleware,
    ApiDispatchMiddleware,
    CorsMiddleware,
    HstsPolicy,
    ProxyEndpoint,
    SecurityHeadersMiddleware,
    cors_options,
    security_headers,
)
from mercato.gateway.openapi import OpenAPIAggregator, docs_router, docs_static
from mercato.gateway.proxy import API_PREFIX, Guard, ServiceProxy
from mercato.gateway.upstreams import build_upstreams, route_table
from mercato.platform.app import ServiceContext, create_service_app
from mercato.platform.net import TrustedProxies
from mercato.platform.observability import rate_limit_refusals
from mercato.platform.security.ratelimit import RateLimiter, Strategy
from mercato.platform.security.tokens import token_verifier
from mercato.platform.telemetry import Tracing
from mercato.settings import Settings, load_settings
from mercato.storefront.app import install_storefront, open_storefront

__all__ = ["API_PREFIX", "create_app"]

TITLE = "Mercato API"
DESCRIPTION = "The Mercato API: every service behind one front door."
#: Fixed windows: the cheapest strategy of `limits` (one counter per key and window, in memory
#: and in Redis); measured at 2/3 of the sliding-window counter's cost per hit. A client can
#: spend up to two windows' worth across a boundary, an accepted trade-off at the front door.
RATE_LIMIT_STRATEGY: Final[Strategy] = "fixed-window"


@dataclass
class GatewayRuntime:
    """What exists only while the gateway runs (its sessions belong to the event loop)."""

    proxy: ServiceProxy | None = None
    aggregator: OpenAPIAggregator | None = None


def create_app(settings: Settings | None = None, *, tracing: Tracing | None = None) -> FastAPI:
    """The gateway; ``tracing``: the process's, when it runs beside other services."""
    settings = settings or load_settings()
    runtime = GatewayRuntime()
    trusted = TrustedProxies(settings.trusted_proxies)

    @asynccontextmanager
    async def run_gateway(app: FastAPI, context: ServiceContext) -> AsyncIterator[None]:
        metrics = GatewayMetrics(context.registry)
        async with AsyncExitStack() as stack:
            upstreams = build_upstreams(
                route_table(settings), settings, trace_configs=context.tracing.http_trace_configs()
            )
            for upstream in upstreams.values():
                stack.push_async_callback(upstream.close)
            metrics.track(
                instance.breaker
                for upstream in upstreams.values()
                for instance in upstream.instances
            )
            context.before_scrape.append(metrics.refresh_breakers)
            guards: list[Guard] = []
            verifier = (
                token_verifier(settings, trace_configs=context.tracing.http_trace_configs())
                if settings.auth_offload
                else None
            )
            if verifier is not None:
                stack.push_async_callback(verifier.close)
            limiter = None
            if settings.rate_limit_enabled:
                limiter = RateLimiter(
                    settings.redis_url,
                    prefix=settings.rate_limit_prefix,
                    strategy=RATE_LIMIT_STRATEGY,
                    fail_closed=settings.rate_limit_fail_closed,
                    on_refused=rate_limit_refusals(context.registry, "gateway"),
                )
                stack.push_async_callback(limiter.close)
                if limiter.shared:
                    context.probes["ratelimit"] = limiter.ping
            if verifier is not None or limiter is not None:
                guards.append(
                    AccessGuard(
                        verifier=verifier,
                        limiter=limiter,
                        trusted_proxies=trusted,
                        api_limit=settings.rate_limit_api,
                        user_limit=settings.rate_limit_user,
                        route_limits=settings.rate_limit_routes,
                    )
                )
            proxy = ServiceProxy(
                upstreams,
                trusted_proxies=trusted,
                max_body_size=settings.max_body_size,
                retries=settings.upstream_retries,
                metrics=metrics,
                guards=guards,
                name_spans=context.tracing.enabled,
            )
            for name in upstreams:
                context.probes[name] = partial(proxy.ready, name)
            runtime.aggregator = OpenAPIAggregator(
                upstreams, title=TITLE, version="1.0.0", description=DESCRIPTION
            )
            runtime.proxy = proxy
            if settings.storefront_enabled:
                app.state.storefront = open_storefront(settings, upstreams, trusted)
                stack.push_async_callback(app.state.storefront.sessions.cache.close)
            try:
                yield
            finally:
                # uvicorn has stopped accepting and waited for open connections; wait for
                # what is still in flight before the sessions close under it.
                await proxy.drain(within=settings.graceful_timeout)
                runtime.proxy = None

    app = create_service_app(
        settings,
        "gateway",
        title=TITLE,
        description=DESCRIPTION,
        hooks=[run_gateway],
        uses_database=False,
        own_openapi=False,  # /openapi.json and /docs are the merged API's (see _add_docs)
        believe_internal_proxies=False,  # the front door: no gateway in front of it
        tracing=tracing,
        inner_middleware=[
            # Inside the request-id middleware: a preflight or a refused host gets an id.
            Middleware(CorsMiddleware, options=cors_options(settings)),
            Middleware(AllowedHostsMiddleware, hosts=list(settings.allowed_hosts)),
        ],
        innermost_middleware=[
            # Inside every other middleware, so the proxied path gets them all; measured
            # (python -m bench._profile), it does not need FastAPI's exception layer or router.
            Middleware(
                ApiDispatchMiddleware,
                api=ProxyEndpoint(lambda: runtime.proxy),
                prefix=API_PREFIX,
            ),
        ],
    )
    if settings.docs_enabled:
        _add_docs(app, runtime)
    if settings.storefront_enabled:
        install_storefront(app)
    # Outside the platform's request-id middleware: every answer, errors included.
    app.add_middleware(
        SecurityHeadersMiddleware,
        headers=security_headers(settings),
        csp=settings.content_security_policy,
        hsts=HstsPolicy(always=settings.is_production, trusted_proxies=trusted),
    )
    return app


def _add_docs(app: FastAPI, runtime: GatewayRuntime) -> None:
    """The gateway's /openapi.json is the merged API, not its own few routes."""

    async def document() -> dict[str, Any]:
        if runtime.aggregator is None:
            return {"openapi": "3.1.0", "info": {"title": TITLE, "version": "1.0.0"}, "paths": {}}
        return await runtime.aggregator.document()

    app.include_router(docs_router(document, title=TITLE))
    app.router.routes.append(docs_static())
