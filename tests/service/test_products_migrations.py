"""Migration 0001_products creates exactly what the products models declare."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from mercato.platform.db import Database
from mercato.platform.migrations import upgrade
from mercato.products.app import MIGRATIONS
from mercato.products.models import Base

pytestmark = pytest.mark.anyio

#: PostgreSQL only, created by raw SQL (operator class): not part of the models.
TRIGRAM_INDEXES = {"ix_products_name_trgm", "ix_products_description_trgm"}


def differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return [
        d
        for d in compare_metadata(context, Base.metadata)
        if not (isinstance(d, tuple) and d[0] == "remove_table" and d[1].name == "alembic_version")
        and not (isinstance(d, tuple) and d[0] == "remove_index" and d[1].name in TRIGRAM_INDEXES)
    ]


async def assert_matches(url: str, schema: str) -> None:
    database = Database(url, schema=schema)
    try:
        await upgrade(database, MIGRATIONS[:1])
        async with database.connect() as connection:
            found = await connection.run_sync(differences)
    finally:
        await database.dispose()
    assert found == []


async def test_the_migration_matches_the_models_on_sqlite() -> None:
    await assert_matches("sqlite+aiosqlite:///:memory:", "products")


@pytest.mark.integration
async def test_the_migration_matches_the_models_on_postgres(postgres_url: str) -> None:
    await assert_matches(postgres_url, "public")
