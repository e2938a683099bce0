"""The users service's composition root."""

from fastapi import FastAPI

from mercato.auth.contracts import UserRegistered
from mercato.messaging import (
    MESSAGING_MIGRATIONS,
    ConsumerGroups,
    Outbox,
    SharedMessaging,
    messaging_hook,
)
from mercato.platform.app import create_service_app
from mercato.platform.migrations import MigrationHistory
from mercato.platform.telemetry import Tracing
from mercato.settings import Settings, load_settings
from mercato.users.api import router
from mercato.users.service import handlers

MIGRATIONS = [MigrationHistory("mercato.users:migrations"), MESSAGING_MIGRATIONS]
#: The events the users service consumes (``handlers``): a new account gets its profile.
CONSUMER_GROUPS: ConsumerGroups = {"users": (UserRegistered.event_type,)}


def create_app(
    settings: Settings | None = None,
    *,
    shared: SharedMessaging | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    """The users service; ``shared`` and ``tracing``: what it shares with the deployment's
    other services."""
    return create_service_app(
        settings or load_settings(),
        "users",
        title="Mercato users service",
        description="User profiles.",
        routers=[router],
        migrations=MIGRATIONS,
        hooks=[
            messaging_hook(Outbox("users"), handlers, shared or SharedMessaging(CONSUMER_GROUPS))
        ],
        tracing=tracing,
    )
