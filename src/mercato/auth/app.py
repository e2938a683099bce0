"""The auth service's composition root."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import get_args

import structlog
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from mercato.auth.api import router
from mercato.auth.mail import ResetMails
from mercato.auth.service import Accounts, AuthService, LoginOutcome
from mercato.messaging import (
    MESSAGING_MIGRATIONS,
    Outbox,
    SharedMessaging,
    messaging_hook,
)
from mercato.platform.app import (
    LifespanHook,
    ServiceContext,
    create_service_app,
    open_database,
)
from mercato.platform.mail import Mailer, mailer_from_settings
from mercato.platform.migrations import MigrationHistory, upgrade
from mercato.platform.observability import MetricFactory, rate_limit_refusals
from mercato.platform.security.passwords import PasswordHasher
from mercato.platform.security.ratelimit import RateLimiter
from mercato.platform.security.tokens import (
    StaticKeys,
    signing_keys,
    token_issuer,
    token_verifier,
)
from mercato.platform.telemetry import Tracing
from mercato.settings import Settings, load_settings

log = structlog.stdlib.get_logger("mercato.auth")

MIGRATIONS = [MigrationHistory("mercato.auth:migrations"), MESSAGING_MIGRATIONS]


def password_hasher(settings: Settings) -> PasswordHasher:
    return PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_cost,
        parallelism=settings.argon2_parallelism,
    )


def login_attempts(registry: CollectorRegistry) -> Callable[[LoginOutcome], None]:
    """What counts ``auth_login_attempts_total{outcome}`` (``/auth/login`` and
    ``/auth/token``); every outcome's series exists from the start, at 0."""
    attempts = MetricFactory(registry).counter(
        "auth_login_attempts_total",
        "Logins by outcome: success, failure (bad credentials), rate_limited (429).",
        ["outcome"],
    )
    for outcome in get_args(LoginOutcome):
        attempts.labels(outcome)
    return lambda outcome: attempts.labels(outcome).inc()


def build_auth_service(
    settings: Settings, context: ServiceContext, app: FastAPI, outbox: Outbox, mailer: Mailer
) -> AuthService:
    """The signing keys, hasher, login limiter and reset mail; the service verifies its own
    tokens against its own keys (no JWKS round trip to itself)."""
    keys = signing_keys(settings)
    app.state.jwks = keys.jwks()
    context.tokens = token_verifier(settings, StaticKeys(app.state.jwks["keys"]))
    return AuthService(
        settings,
        hasher=password_hasher(settings),
        issuer=token_issuer(settings, keys),
        limiter=RateLimiter(
            settings.redis_url,
            prefix=settings.rate_limit_prefix,
            fail_closed=settings.rate_limit_fail_closed,
            on_refused=rate_limit_refusals(context.registry, context.service),
        ),
        login_attempts=login_attempts(context.registry),
        outbox=outbox,
        mails=ResetMails(mailer),
    )


async def create_admin(
    settings: Settings, username: str, password: str, *, email: str | None = None
) -> tuple[str, bool]:
    """Ensure an administrator exists in the auth database (``mercato create-admin``):
    answers its id and whether it was created. Migrates first when ``AUTO_MIGRATE`` is on;
    the ``user.registered`` event waits in the outbox for the auth service's relay."""
    database = open_database(settings, "auth")
    try:
        if settings.auto_migrate:
            await upgrade(database, MIGRATIONS)
        hasher = password_hasher(settings)
        try:
            accounts = Accounts(hasher, Outbox("auth"))
            user, created = await accounts.ensure_admin(database, username, password, email=email)
        finally:
            hasher.close()
        return user.id, created
    finally:
        await database.dispose()


def auth_runtime(outbox: Outbox, mailer: Mailer | None = None) -> LifespanHook:
    """Start-up of the auth service: its use cases (announcing through ``outbox``, mailing
    through ``mailer``, else the one of the settings) and the bootstrap administrator."""

    @asynccontextmanager
    async def run(app: FastAPI, context: ServiceContext) -> AsyncIterator[None]:
        settings = Settings.of(context.settings)
        if settings.is_production and not settings.public_url:
            log.warning("PUBLIC_URL is not set: password-reset links name the gateway's URL")
        mails = mailer or mailer_from_settings(settings)
        service = build_auth_service(settings, context, app, outbox, mails)
        app.state.auth_service = service
        try:
            await service.bootstrap_admin(context.db)
            yield
        finally:
            await service.mails.close(within=settings.graceful_timeout)
            await service.limiter.close()
            service.hasher.close()
            if context.tokens is not None:
                await context.tokens.close()

    return run


def create_app(
    settings: Settings | None = None,
    *,
    shared: SharedMessaging | None = None,
    mailer: Mailer | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    """The auth service (it consumes nothing); ``shared`` and ``tracing``: what it shares
    with the deployment's other services; ``mailer``: a fake a test passes."""
    outbox = Outbox("auth")
    return create_service_app(
        settings or load_settings(),
        "auth",
        title="Mercato auth service",
        description="Accounts, credentials and tokens.",
        routers=[router],
        migrations=MIGRATIONS,
        hooks=[
            messaging_hook(outbox, shared=shared),
            auth_runtime(outbox, mailer),
        ],
        tracing=tracing,
    )
