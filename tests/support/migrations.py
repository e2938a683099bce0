"""Whether a context's hand-written migrations create exactly what its models declare."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, MetaData

from mercato.platform.db import Database
from mercato.platform.migrations import MigrationHistory, upgrade


def differences(
    connection: Connection, metadata: MetaData, ignored_indexes: Collection[str] = ()
) -> list[Any]:
    """What autogenerate would change to make the database match ``metadata``, but for
    alembic's own version table and the ``ignored_indexes`` the models do not declare."""
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return [
        d
        for d in compare_metadata(context, metadata)
        if not (isinstance(d, tuple) and d[0] == "remove_table" and d[1].name == "alembic_version")
        and not (isinstance(d, tuple) and d[0] == "remove_index" and d[1].name in ignored_indexes)
    ]


async def assert_migrations_match(
    url: str,
    history: list[MigrationHistory],
    metadata: MetaData,
    *,
    schema: str | None = None,
    ignored_indexes: Collection[str] = (),
) -> None:
    """Apply ``history`` to the database at ``url`` and find no difference from ``metadata``."""
    database = Database(url, schema=schema)
    try:
        await upgrade(database, history)
        async with database.connect() as connection:
            found = await connection.run_sync(differences, metadata, ignored_indexes)
    finally:
        await database.dispose()
    assert found == []
