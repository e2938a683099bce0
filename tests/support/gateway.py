"""A gateway app in-process (httpx ASGITransport) in front of stand-in upstreams."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI

from mercato.gateway.app import create_app
from mercato.settings import Settings
from support.auth import test_settings


def gateway_settings(routes: dict[str, Any], **overrides: Any) -> Settings:
    """Testing settings routing ``routes`` (``{"svc": url or [urls]}``), trusting the test
    token key, with roomy limits unless a test sets its own."""
    values: dict[str, Any] = {
        "gateway_routes": routes,
        "rate_limit_api": "10000/minute",
        "rate_limit_user": "10000/minute",
        "upstream_fail_timeout": 30.0,
        **overrides,
    }
    return test_settings(**values)


@contextlib.asynccontextmanager
async def running(
    settings: Settings, client: tuple[str, int] = ("127.0.0.1", 50000)
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    transport = httpx.ASGITransport(app, client=client)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http,
    ):
        yield app, http
