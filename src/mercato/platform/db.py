"""Database access: one engine per service, and the unit of work that owns each transaction.

SQLite (aiosqlite) is the embedded default, one file per service under ``DATA_DIR``, in WAL
mode with foreign keys on and write transactions started with ``BEGIN IMMEDIATE`` so that
concurrent writers queue instead of failing on lock upgrade. PostgreSQL (asyncpg) is used
when the URL says so, each service in its own schema (``search_path``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from sqlalchemy import DateTime, Dialect, MetaData, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator

#: Stable constraint names, so that migrations can name (and drop) what they created.
NAMING_CONVENTION: Final[dict[str, str]] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_READ_ONLY: Final = "mercato_read_only"
_RETURNED_AT: Final = "mercato_returned_at"
#: A pooled PostgreSQL connection idle for longer than this (seconds) is pinged before use.
PING_AFTER_IDLE: Final = 1.0
AfterCommit = Callable[[], Awaitable[None] | None]


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite hands back naive ones).

    A naive datetime is refused rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_metadata() -> MetaData:
    """A ``MetaData`` with Mercato's naming convention; each service owns one."""
    return MetaData(naming_convention=NAMING_CONVENTION)


class Database:
    """The engine and session factory of one service's database."""

    def __init__(
        self,
        url: str | URL,
        *,
        schema: str | None = None,
        ping_after_idle: float = PING_AFTER_IDLE,
        **engine_options: Any,
    ) -> None:
        self.ping_after_idle = ping_after_idle
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.is_postgres = self.url.get_backend_name() == "postgresql"
        self.schema = schema if self.is_postgres else None
        #: An in-memory SQLite database is one shared connection, which cannot hold two
        #: transactions at once: its units of work (outbox relay, consumers, requests) take turns.
        self._serial: asyncio.Lock | None = None
        #: SQLite has one writer at a time: this process's write units of work queue here in
        #: turn, instead of polling the file lock in SQLite's busy handler (sleeps of up to
        #: 100 ms, which a writer committing in a loop can starve for seconds).
        self._writers: asyncio.Lock | None = asyncio.Lock() if self.is_sqlite else None
        self.engine = self._create_engine(engine_options)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = async_sessionmaker(
            self.engine.execution_options(**{_READ_ONLY: True}), expire_on_commit=False
        )

    def _create_engine(self, options: dict[str, Any]) -> AsyncEngine:
        if self.is_sqlite:
            return self._create_sqlite_engine(options)
        if self.is_postgres and self.schema:
            server_settings = {"search_path": self.schema, "application_name": "mercato"}
            options.setdefault("connect_args", {}).setdefault("server_settings", server_settings)
        engine = create_async_engine(self.url, **options)
        _ping_idle_connections(engine, self.ping_after_idle)
        return engine

    def _create_sqlite_engine(self, options: dict[str, Any]) -> AsyncEngine:
        options.pop("pool_size", None)
        database = self.url.database or ""
        in_memory = database in {"", ":memory:"} or "mode=memory" in database
        if in_memory:
            options.update(poolclass=StaticPool)
            self._serial = asyncio.Lock()
        else:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # Let SQLAlchemy, not the driver, decide when a transaction begins (see _begin).
        options.setdefault("connect_args", {}).update(isolation_level=None, timeout=30)
        engine = create_async_engine(self.url, **options)

        @event.listens_for(engine.sync_engine, "connect")
        def _configure(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(connection: Any) -> None:
            read_only = connection.get_execution_options().get(_READ_ONLY, False)
            connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine

    def unit_of_work(self, *, read_only: bool = False) -> UnitOfWork:
        """A new unit of work; ``read_only`` lets SQLite readers run beside a writer."""
        if read_only:
            return UnitOfWork(self._read_sessions, self._serial, read_only=True)
        return UnitOfWork(self._sessions, self._serial or self._writers)

    def connect(self) -> Any:
        """A raw connection context, for schema management and health checks."""
        return self.engine.connect()

    async def ping(self) -> None:
        if self._serial is not None:
            async with self._serial, self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            return
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def ensure_schema(self, connection: AsyncConnection) -> None:
        if self.schema:
            await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))

    async def dispose(self) -> None:
        await self.engine.dispose()


def _ping_idle_connections(engine: AsyncEngine, idle_after: float) -> None:
    """Ping a pooled connection before use only when it sat idle for ``idle_after`` seconds.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout, and asyncpg's ping is three round
    trips (BEGIN, ``;``, ROLLBACK): more than the primary-key read it guards. A connection
    back in the pool within the last second is alive but for a server restart in that second;
    its request then fails as any request does during an outage (503), and the disconnect
    invalidates the whole pool, so the next checkouts get fresh connections."""
    dialect = engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        returned = record.info.get(_RETURNED_AT)
        if returned is None or time.monotonic() - returned < idle_after:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                raise DisconnectionError from exc  # the pool replaces it and checks out again
            raise


class UnitOfWork:
    """Owns one transaction: ``commit()`` makes it durable; leaving without it rolls back.

    The use case that opens it (a context's ``service.py``) commits it; repositories and
    handlers only use ``uow.session`` (docs/architecture.md, "Transactions"). Callbacks
    registered with :meth:`after_commit` run once the commit succeeded (the outbox relay is
    woken this way).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        serial: asyncio.Lock | None = None,
        *,
        read_only: bool = False,
    ) -> None:
        self._sessions = sessions
        self._serial = serial
        self._read_only = read_only
        self._session: AsyncSession | None = None
        self._after_commit: list[AfterCommit] = []

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("the unit of work is not open; use `async with`")
        return self._session

    async def __aenter__(self) -> Self:
        if self._serial is not None:
            await self._serial.acquire()
        self._session = self._sessions()
        self._after_commit = []
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session = self.session
        try:
            # A no-op after commit(); undoes anything uncommitted. A read-only unit skips it:
            # close() below ends its transaction the same way (the connection rolls back as
            # it is released), without a second pass through the session's state machine.
            if not self._read_only:
                await session.rollback()
        finally:
            await session.close()
            self._session = None
            if self._serial is not None:
                self._serial.release()

    def after_commit(self, callback: AfterCommit) -> None:
        self._after_commit.append(callback)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A nested transaction: when the block raises, what it did is undone and the
        callbacks it registered with :meth:`after_commit` are dropped (the rest of the
        transaction goes on)."""
        registered = len(self._after_commit)
        nested = await self.session.begin_nested()
        try:
            yield
        except BaseException:
            del self._after_commit[registered:]
            await nested.rollback()
            raise
        await nested.commit()

    async def commit(self) -> None:
        await self.session.commit()
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            result = callback()
            if result is not None:
                await result

    async def rollback(self) -> None:
        await self.session.rollback()
