"""Migration 0001_products creates exactly what the products models declare."""

from __future__ import annotations

import pytest

from mercato.products.app import MIGRATIONS
from mercato.products.models import Base
from support.migrations import assert_migrations_match

pytestmark = pytest.mark.anyio

#: PostgreSQL only, created by raw SQL (operator class): not part of the models.
TRIGRAM_INDEXES = {"ix_products_name_trgm", "ix_products_description_trgm"}


async def assert_matches(url: str, schema: str) -> None:
    await assert_migrations_match(
        url, MIGRATIONS[:1], Base.metadata, schema=schema, ignored_indexes=TRIGRAM_INDEXES
    )


async def test_the_migration_matches_the_models_on_sqlite() -> None:
    await assert_matches("sqlite+aiosqlite:///:memory:", "products")


@pytest.mark.integration
async def test_the_migration_matches_the_models_on_postgres(postgres_url: str) -> None:
    await assert_matches(postgres_url, "public")
