"""The auth service's composition root."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from mercato.auth.api import router
from mercato.auth.service import AuthService
from mercato.messaging import MESSAGING_MIGRATIONS, messaging_hook
from mercato.platform.app import ServiceContext, create_service_app
from mercato.platform.migrations import MigrationHistory
from mercato.platform.security.passwords import PasswordHasher
from mercato.platform.security.ratelimit import RateLimiter
from mercato.platform.security.tokens import (
    StaticKeys,
    signing_keys,
    token_issuer,
    token_verifier,
)
from mercato.platform.settings import Settings, load_settings

MIGRATIONS = [MigrationHistory("mercato.auth:migrations"), MESSAGING_MIGRATIONS]

log = structlog.stdlib.get_logger("mercato.auth")


def build_auth_service(settings: Settings, context: ServiceContext, app: FastAPI) -> AuthService:
    """The signing keys, hasher and login limiter; the service verifies its own tokens
    against its own keys (no JWKS round trip to itself)."""
    keys = signing_keys(settings)
    app.state.jwks = keys.jwks()
    context.tokens = token_verifier(settings, StaticKeys(app.state.jwks["keys"]))
    return AuthService(
        settings,
        hasher=PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_cost,
            parallelism=settings.argon2_parallelism,
        ),
        issuer=token_issuer(settings, keys),
        limiter=RateLimiter(
            settings.redis_url,
            prefix=settings.rate_limit_prefix,
            fail_closed=settings.rate_limit_fail_closed,
        ),
    )


async def bootstrap_admin(service: AuthService, context: ServiceContext) -> None:
    """Ensure ``MERCATO_ADMIN_USERNAME`` exists with the admin role, when it is set."""
    settings = context.settings
    if not settings.admin_username or settings.admin_password is None:
        return
    async with context.db.unit_of_work() as uow:
        user, created = await service.ensure_admin(
            uow, settings.admin_username, settings.admin_password.get_secret_value()
        )
        await uow.commit()
    log.info("admin ensured", user_id=user.id, username=user.username, created=created)


@asynccontextmanager
async def auth_runtime(app: FastAPI, context: ServiceContext) -> AsyncIterator[None]:
    service = build_auth_service(context.settings, context, app)
    app.state.auth_service = service
    try:
        await bootstrap_admin(service, context)
        yield
    finally:
        await service.limiter.close()
        if context.tokens is not None:
            await context.tokens.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or load_settings(),
        "auth",
        title="Mercato auth service",
        description="Accounts, credentials and tokens.",
        routers=[router],
        migrations=MIGRATIONS,
        hooks=[messaging_hook(), auth_runtime],
    )
