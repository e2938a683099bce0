"""Alembic, driven from code: each service has its own history under ``<service>/migrations``.

A history is applied through the service's own :class:`~mercato.platform.db.Database`
connection (the Alembic cookbook's "connection sharing" recipe), so an in-memory SQLite
database is migrated in place and PostgreSQL gets the service's schema first.

:func:`unapplied` is the read-only side: which histories the database has not reached the
head of (``/readyz`` is 503 until ``mercato migrate`` ran).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from alembic import command, context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData

from mercato.platform.db import Database


@dataclass(frozen=True, slots=True)
class MigrationHistory:
    """One Alembic history: where its scripts live and which table records its version."""

    script_location: str  # "package:folder", e.g. "mercato.orders:migrations"
    version_table: str = "alembic_version"


#: Alembic keeps its running context in module globals, so one migration runs at a time
#: per process (`mercato up` starts four services at once). Within an event loop the
#: services take turns on an asyncio lock of that loop (never one shared between loops: a
#: lock held in a loop that went away would block every later loop); across threads the
#: thread lock inside the migration does the same.
_loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)
_thread_lock = threading.Lock()


def _alembic_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _loop_locks.get(loop)
    if lock is None:
        lock = _loop_locks[loop] = asyncio.Lock()
    return lock


def _config(history: MigrationHistory, connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", history.script_location)
    config.set_main_option("version_table", history.version_table)
    config.attributes["connection"] = connection
    return config


async def upgrade(database: Database, histories: list[MigrationHistory]) -> None:
    """Bring ``database`` to the head of every history, in order."""
    async with database.engine.begin() as connection:
        await database.ensure_schema(connection)
    for history in histories:
        async with _alembic_lock(), database.engine.begin() as connection:
            await connection.run_sync(_upgrade, history)


def _upgrade(connection: Connection, history: MigrationHistory) -> None:
    with _thread_lock:
        command.upgrade(_config(history, connection), "head")


@dataclass(frozen=True, slots=True)
class Heads:
    """What the code of one history knows: its head revisions, and every revision."""

    history: MigrationHistory
    heads: frozenset[str]
    known: frozenset[str]

    @classmethod
    def of(cls, history: MigrationHistory) -> Heads:
        script = ScriptDirectory.from_config(_config(history))
        return cls(
            history,
            frozenset(script.get_heads()),
            frozenset(revision.revision for revision in script.walk_revisions()),
        )

    def reached_by(self, current: tuple[str, ...]) -> bool:
        """Whether a database at ``current`` has every head applied. A revision this code
        does not know was written by newer code (a rolling upgrade): that is not behind."""
        return self.heads <= set(current) or any(rev not in self.known for rev in current)


async def unapplied(database: Database, heads: list[Heads]) -> list[MigrationHistory]:
    """The histories whose heads ``database`` has not reached (read-only: nothing is
    created, a missing version table reads as nothing applied)."""
    behind: list[MigrationHistory] = []
    async with database.unit_of_work(read_only=True) as uow:
        connection = await uow.session.connection()
        for history_heads in heads:
            current = await connection.run_sync(_current_heads, history_heads.history)
            if not history_heads.reached_by(current):
                behind.append(history_heads.history)
    return behind


def _current_heads(connection: Connection, history: MigrationHistory) -> tuple[str, ...]:
    migration = MigrationContext.configure(
        connection, opts={"version_table": history.version_table}
    )
    return tuple(migration.get_current_heads())


def run_env(target_metadata: MetaData | None) -> None:
    """The body of every ``migrations/env.py``: migrate the connection it was handed."""
    config = context.config
    connection: Connection | None = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations with `mercato migrate`, which supplies the connection")
    options: dict[str, Any] = {
        "connection": connection,
        "target_metadata": target_metadata,
        "version_table": config.get_main_option("version_table") or "alembic_version",
        "render_as_batch": connection.dialect.name == "sqlite",
        "compare_type": True,
    }
    context.configure(**options)
    with context.begin_transaction():
        context.run_migrations()
