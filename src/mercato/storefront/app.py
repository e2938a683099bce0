"""The storefront's wiring: its routes, static files and error pages on the gateway's app,
and its runtime (API client, session store, CSRF tokens), built in the gateway's lifespan
from the gateway's own upstreams."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from mercato.gateway.upstreams import Upstream
from mercato.platform.cache import create_cache
from mercato.platform.net import TrustedProxies
from mercato.settings import Settings
from mercato.storefront import (
    accounts,
    admin,
    admin_orders,
    catalogue,
    orders,
    passwords,
    shop,
    signin,
)
from mercato.storefront.api import ApiClient
from mercato.storefront.csrf import CsrfTokens
from mercato.storefront.sessions import SessionStore
from mercato.storefront.web import CookiePolicy, Storefront, install_page_errors

#: Each page module has a ``router``; together they are the storefront of API.md.
PAGES = (catalogue, signin, accounts, passwords, shop, orders, admin, admin_orders)


def install_storefront(app: FastAPI) -> None:
    """Add the pages, ``/static`` and the HTML error pages to the gateway's ``app``."""
    for page in PAGES:
        app.include_router(page.router, include_in_schema=False)
    app.router.routes.append(
        Mount(
            "/static", app=StaticFiles(packages=[("mercato.storefront", "static")]), name="static"
        )
    )
    install_page_errors(app)


def open_storefront(
    settings: Settings, upstreams: Mapping[str, Upstream], trusted: TrustedProxies
) -> Storefront:
    """The storefront's runtime; close ``.sessions.cache`` when the gateway stops."""
    if settings.secret_key is None:  # production refuses to start without one
        raise ValueError("the storefront needs SECRET_KEY to sign its sessions")
    secret = settings.secret_key.get_secret_value()
    cache = create_cache(
        redis_url=settings.redis_url,
        namespace="storefront-sessions",
        default_ttl=settings.session_ttl,
    )
    return Storefront(
        api=ApiClient(upstreams, trusted),
        sessions=SessionStore(cache, secret=secret, ttl=settings.session_ttl),
        csrf=CsrfTokens(secret, max_age=settings.session_ttl),
        cookie=CookiePolicy(secure=settings.environment != "development"),
        page_size=settings.storefront_page_size,
    )
