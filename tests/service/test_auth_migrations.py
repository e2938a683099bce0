"""The hand-written migrations of auth and users create exactly what the models declare."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, MetaData

from mercato.auth.app import MIGRATIONS as AUTH_MIGRATIONS
from mercato.auth.models import Base as AuthBase
from mercato.platform.db import Database
from mercato.platform.migrations import MigrationHistory, upgrade
from mercato.users.app import MIGRATIONS as USERS_MIGRATIONS
from mercato.users.models import Base as UsersBase

pytestmark = pytest.mark.anyio

CASES = [
    pytest.param(AUTH_MIGRATIONS[:1], AuthBase.metadata, id="auth"),
    pytest.param(USERS_MIGRATIONS[:1], UsersBase.metadata, id="users"),
]


def differences(connection: Connection, metadata: MetaData) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    diff = compare_metadata(context, metadata)
    return [
        d
        for d in diff
        if not (isinstance(d, tuple) and d[0] == "remove_table" and d[1].name == "alembic_version")
    ]


async def assert_matches(
    url: str, history: list[MigrationHistory], metadata: MetaData, schema: str
) -> None:
    database = Database(url, schema=schema)
    try:
        await upgrade(database, history)
        async with database.connect() as connection:
            found = await connection.run_sync(differences, metadata)
    finally:
        await database.dispose()
    assert found == []


@pytest.mark.parametrize(("history", "metadata"), CASES)
async def test_the_migration_matches_the_models_on_sqlite(
    history: list[MigrationHistory], metadata: MetaData
) -> None:
    await assert_matches("sqlite+aiosqlite:///:memory:", history, metadata, "x")


@pytest.mark.integration
@pytest.mark.parametrize(("history", "metadata"), CASES)
async def test_the_migration_matches_the_models_on_postgres(
    postgres_url: str, history: list[MigrationHistory], metadata: MetaData
) -> None:
    await assert_matches(postgres_url, history, metadata, "public")
