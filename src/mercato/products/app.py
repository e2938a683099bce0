"""The products service's composition root."""

from fastapi import FastAPI

from mercato.platform.app import create_service_app
from mercato.platform.migrations import MigrationHistory
from mercato.platform.settings import Settings, load_settings

MIGRATIONS = [MigrationHistory("mercato.products:migrations")]


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        settings or load_settings(),
        "products",
        title="Mercato products service",
        description="The product catalogue and its stock.",
        migrations=MIGRATIONS,
    )
