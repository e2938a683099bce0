"""The orders service's composition root."""

from fastapi import FastAPI

from mercato.platform.app import create_service_app
from mercato.platform.migrations import MigrationHistory
from mercato.platform.settings import Settings, load_settings

MIGRATIONS = [MigrationHistory("mercato.orders:migrations")]


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or load_settings(),
        "orders",
        title="Mercato orders service",
        description="Orders and the order saga.",
        migrations=MIGRATIONS,
    )
