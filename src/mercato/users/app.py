"""The users service's composition root."""

from fastapi import FastAPI

from mercato.messaging import MESSAGING_MIGRATIONS, messaging_hook
from mercato.platform.app import create_service_app
from mercato.platform.migrations import MigrationHistory
from mercato.settings import Settings, load_settings
from mercato.users.api import router
from mercato.users.service import handlers

MIGRATIONS = [MigrationHistory("mercato.users:migrations"), MESSAGING_MIGRATIONS]


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or load_settings(),
        "users",
        title="Mercato users service",
        description="User profiles.",
        routers=[router],
        migrations=MIGRATIONS,
        hooks=[messaging_hook(handlers)],
    )
