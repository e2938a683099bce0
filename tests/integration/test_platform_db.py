"""The unit of work and the engine, on SQLite (memory and file) and on real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import ForeignKey, String, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from mercato.platform.db import Database, new_metadata

pytestmark = pytest.mark.anyio


class Base(DeclarativeBase):
    metadata = new_metadata()


class Shelf(Base):
    __tablename__ = "shelves"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    shelf_id: Mapped[int] = mapped_column(ForeignKey("shelves.id"))


@pytest.fixture(
    params=["sqlite-memory", "sqlite-file", pytest.param("postgres", marks=pytest.mark.integration)]
)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite-memory":
        url = "sqlite+aiosqlite:///:memory:"
    elif request.param == "sqlite-file":
        url = f"sqlite+aiosqlite:///{tmp_path / 'nested' / 'shop.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    db = Database(url, schema="shop")
    async with db.engine.begin() as connection:
        await db.ensure_schema(connection)
        await connection.run_sync(Base.metadata.create_all)
    yield db
    await db.dispose()


async def count(db: Database) -> int:
    async with db.unit_of_work(read_only=True) as uow:
        return int(await uow.session.scalar(select(func.count()).select_from(Shelf)) or 0)


async def test_commit_makes_the_change_durable(database: Database) -> None:
    async with database.unit_of_work() as uow:
        uow.session.add(Shelf(name="fiction"))
        await uow.commit()

    assert await count(database) == 1


async def test_leaving_without_commit_rolls_back(database: Database) -> None:
    async with database.unit_of_work() as uow:
        uow.session.add(Shelf(name="fiction"))
        await uow.session.flush()

    assert await count(database) == 0


async def test_an_exception_rolls_back(database: Database) -> None:
    with pytest.raises(RuntimeError):
        async with database.unit_of_work() as uow:
            uow.session.add(Shelf(name="fiction"))
            await uow.session.flush()
            raise RuntimeError("the use case failed")

    assert await count(database) == 0


async def test_after_commit_callbacks_run_only_after_a_commit(database: Database) -> None:
    calls: list[str] = []

    async def notify() -> None:
        calls.append("async")

    async with database.unit_of_work() as uow:
        uow.after_commit(lambda: calls.append("rolled back"))
    async with database.unit_of_work() as uow:
        uow.after_commit(notify)
        uow.after_commit(lambda: calls.append("sync"))
        uow.session.add(Shelf(name="x"))
        await uow.commit()

    assert calls == ["async", "sync"]


async def test_foreign_keys_are_enforced(database: Database) -> None:
    with pytest.raises(IntegrityError):
        async with database.unit_of_work() as uow:
            uow.session.add(Book(shelf_id=999))
            await uow.commit()


async def test_constraint_names_follow_the_naming_convention() -> None:
    assert {c.name for c in Shelf.__table__.constraints} == {"pk_shelves", "uq_shelves_name"}


async def test_concurrent_writers_queue_instead_of_failing(database: Database) -> None:
    async def add(index: int) -> None:
        async with database.unit_of_work() as uow:
            uow.session.add(Shelf(name=f"shelf-{index}"))
            await uow.session.flush()
            await asyncio.sleep(0)  # let the others start their transactions
            await uow.commit()

    await asyncio.gather(*(add(i) for i in range(20)))

    assert await count(database) == 20


async def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}")
    try:
        async with db.connect() as connection:
            mode = (await connection.execute(text("PRAGMA journal_mode"))).scalar()
            keys = (await connection.execute(text("PRAGMA foreign_keys"))).scalar()
    finally:
        await db.dispose()

    assert (mode, keys) == ("wal", 1)


@pytest.mark.integration
async def test_postgres_keeps_each_service_in_its_own_schema(postgres_url: str) -> None:
    orders, users = Database(postgres_url, schema="orders"), Database(postgres_url, schema="users")
    try:
        for db in (orders, users):
            async with db.engine.begin() as connection:
                await db.ensure_schema(connection)
                await connection.run_sync(Base.metadata.create_all)
        async with orders.unit_of_work() as uow:
            uow.session.add(Shelf(name="only in orders"))
            await uow.commit()

        assert (await count(orders), await count(users)) == (1, 0)
    finally:
        await orders.dispose()
        await users.dispose()


async def _terminate_pooled_connections(postgres_url: str) -> None:
    """End, server-side, every connection of the database but this one (a restart, as a
    pooled connection sees it)."""
    import asyncpg

    dsn = postgres_url.replace("+asyncpg", "")
    killer = await asyncpg.connect(dsn)
    try:
        await killer.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await killer.close()


@asynccontextmanager
async def pooled_database(postgres_url: str, *, ping_after_idle: float) -> AsyncIterator[Database]:
    """A database with the test tables, one read done (a connection back in the pool)."""
    db = Database(postgres_url, schema="shop", ping_after_idle=ping_after_idle)
    try:
        async with db.engine.begin() as connection:
            await db.ensure_schema(connection)
            await connection.run_sync(Base.metadata.create_all)
        assert await count(db) == 0
        yield db
    finally:
        await db.dispose()


@pytest.mark.integration
async def test_a_connection_dropped_while_idle_is_replaced_before_use(postgres_url: str) -> None:
    async with pooled_database(postgres_url, ping_after_idle=0.05) as db:
        await _terminate_pooled_connections(postgres_url)
        await asyncio.sleep(0.1)  # idle past ping_after_idle: pinged, found dead, replaced

        assert await count(db) == 0


@pytest.mark.integration
async def test_a_recently_used_connection_is_not_pinged(postgres_url: str) -> None:
    """The other side of the same rule: within ``ping_after_idle`` a checkout costs no ping
    (so a connection dropped that recently fails its one request, and is replaced)."""
    async with pooled_database(postgres_url, ping_after_idle=3600) as db:
        await _terminate_pooled_connections(postgres_url)

        with pytest.raises(DBAPIError):
            await count(db)
        assert await count(db) == 0  # the disconnect invalidated the pool
