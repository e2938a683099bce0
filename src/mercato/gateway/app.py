"""The gateway's composition root: the proxy, and readiness that aggregates the services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from starlette.routing import Route

from mercato.gateway.proxy import ServiceProxy
from mercato.platform.app import ServiceContext, create_service_app
from mercato.platform.net import TrustedProxies
from mercato.platform.settings import BACKEND_SERVICES, Settings, load_settings

API_PREFIX = "/api/v1"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    proxy = ServiceProxy(
        {service: settings.service_url(service) for service in BACKEND_SERVICES},
        trusted_proxies=TrustedProxies(settings.trusted_proxies),
        timeout=settings.upstream_timeout,
        connect_timeout=settings.upstream_connect_timeout,
        pool_size=settings.upstream_pool_size,
    )

    @asynccontextmanager
    async def run_proxy(app: FastAPI, context: ServiceContext) -> AsyncIterator[None]:
        await proxy.start()
        for service in BACKEND_SERVICES:
            context.probes[service] = partial(proxy.ready, service)
        try:
            yield
        finally:
            await proxy.close()

    app = create_service_app(
        settings,
        "gateway",
        title="Mercato API",
        description="The Mercato API: every service behind one front door.",
        hooks=[run_proxy],
        uses_database=False,
    )
    app.router.routes.append(Route(API_PREFIX + "/{service}{rest:path}", endpoint=proxy))
    return app
