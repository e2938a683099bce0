"""Every query of the orders context. Repositories work in the caller's session and never
commit; state changes are compare-and-set updates, so concurrent writers cannot undo each
other on SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload

from mercato.orders.domain import OrderStatus
from mercato.orders.models import (
    IdempotencyKeyRow,
    NotificationRow,
    OrderLineRow,
    OrderRow,
    RecipientRow,
)
from mercato.platform.repository import Repository

IN_FLIGHT = "in_flight"
DONE = "done"


#: Built once: the hottest read of the context, constructed and cache-keyed per call otherwise.
_ORDER_WITH_LINES = (
    select(OrderRow).where(OrderRow.id == bindparam("order_id")).options(joinedload(OrderRow.lines))
)


#: The same read as plain columns, for a reader that only shows the order: one row per
#: line (in order), each with the order's columns. No ORM objects, identity map or
#: loader: the statement runs on the session's connection, in its transaction.
_ORDER_VIEW = (
    select(
        OrderRow.__table__,
        OrderLineRow.product_id,
        OrderLineRow.name,
        OrderLineRow.quantity,
        OrderLineRow.unit_price,
    )
    .outerjoin(OrderLineRow.__table__)
    .where(OrderRow.id == bindparam("order_id"))
    .order_by(OrderLineRow.position)
)


class OrderRepository(Repository[OrderRow]):
    model = OrderRow

    async def get(self, order_id: str) -> OrderRow | None:
        """The order with its lines loaded, in one query (a join: one round trip, where
        ``selectinload`` takes a second one for the lines)."""
        result = await self.session.execute(_ORDER_WITH_LINES, {"order_id": order_id})
        return result.unique().scalar_one_or_none()

    async def view(self, order_id: str) -> Sequence[Row[Any]]:
        """The order's columns and its lines', one row per line in order (no row: no such
        order), for a read that changes nothing: about a third of the Python work of
        :meth:`get`, which builds and tracks ORM objects."""
        connection = await self.session.connection()
        return (await connection.execute(_ORDER_VIEW, {"order_id": order_id})).all()

    async def page(
        self,
        *,
        user_id: str | None,
        status: OrderStatus | None = None,
        limit: int,
        offset: int,
    ) -> tuple[list[OrderRow], int]:
        """One page of orders, newest first: the user's, or everyone's when ``user_id`` is
        None; only those in ``status`` when given."""
        query = select(OrderRow)
        count = select(func.count()).select_from(OrderRow)
        if user_id is not None:
            query = query.where(OrderRow.user_id == user_id)
            count = count.where(OrderRow.user_id == user_id)
        if status is not None:
            query = query.where(OrderRow.status == status.value)
            count = count.where(OrderRow.status == status.value)
        query = (
            query.options(selectinload(OrderRow.lines))
            .order_by(OrderRow.created_at.desc(), OrderRow.id)
            .limit(limit)
            .offset(offset)
        )
        rows = list((await self.session.execute(query)).scalars())
        total = (await self.session.execute(count)).scalar_one()
        return rows, int(total)

    async def move(
        self,
        order_id: str,
        *,
        from_: Collection[OrderStatus],
        to: OrderStatus,
        now: datetime,
        reason: str | None = None,
    ) -> bool:
        """Set ``to`` if the order is still in one of ``from_`` (the domain's
        ``allowed_from(to)``); False if it was not (it moved on meanwhile, or does not exist).
        The check and the write are one statement."""
        values: dict[str, Any] = {"status": to.value, "updated_at": now}
        if reason is not None:
            values["reason"] = reason
        statement = (
            update(OrderRow)
            .where(OrderRow.id == order_id, OrderRow.status.in_([s.value for s in from_]))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        result: Any = await self.session.execute(statement)
        return bool(result.rowcount == 1)


def _insert_for(session: AsyncSession) -> Any:
    """The dialect's INSERT, which knows ``ON CONFLICT`` (PostgreSQL and SQLite alike)."""
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


class IdempotencyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def claim(
        self,
        *,
        user_id: str,
        key: str,
        fingerprint: str,
        now: datetime,
        expires_at: datetime,
    ) -> int | None:
        """Insert the key as in flight and return its row id; None if the user already has
        it. The unique constraint on (user_id, key) decides, so concurrent claims have
        exactly one winner on every database and in every process."""
        values = {
            "user_id": user_id,
            "key": key,
            "fingerprint": fingerprint,
            "status": IN_FLIGHT,
            "created_at": now,
            "locked_at": now,
            "expires_at": expires_at,
        }
        statement = (
            _insert_for(self.session)(IdempotencyKeyRow)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["user_id", "key"])
            .returning(IdempotencyKeyRow.id)
        )
        row_id = (await self.session.execute(statement)).scalar_one_or_none()
        return None if row_id is None else int(row_id)

    async def get(self, *, user_id: str, key: str) -> IdempotencyKeyRow | None:
        statement = select(IdempotencyKeyRow).where(
            IdempotencyKeyRow.user_id == user_id, IdempotencyKeyRow.key == key
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def take_over(self, row_id: int, *, locked_at: datetime, now: datetime) -> bool:
        """Re-lock an in-flight key whose holder gave up (crashed) at ``locked_at``; only one
        of several concurrent callers succeeds."""
        statement = (
            update(IdempotencyKeyRow)
            .where(
                IdempotencyKeyRow.id == row_id,
                IdempotencyKeyRow.status == IN_FLIGHT,
                IdempotencyKeyRow.locked_at == locked_at,
            )
            .values(locked_at=now)
            .execution_options(synchronize_session=False)
        )
        result: Any = await self.session.execute(statement)
        return bool(result.rowcount == 1)

    async def complete(self, row_id: int, *, status: int, body: str, order_id: str | None) -> None:
        """Record the answer every later retry with this key gets."""
        statement = (
            update(IdempotencyKeyRow)
            .where(IdempotencyKeyRow.id == row_id)
            .values(status=DONE, response_status=status, response_body=body, order_id=order_id)
            .execution_options(synchronize_session=False)
        )
        await self.session.execute(statement)

    async def release(self, row_id: int) -> None:
        """Forget an in-flight key whose request failed without effect, so a retry can run."""
        statement = delete(IdempotencyKeyRow).where(
            IdempotencyKeyRow.id == row_id, IdempotencyKeyRow.status == IN_FLIGHT
        )
        await self.session.execute(statement)

    async def delete_expired(self, now: datetime, *, user_id: str | None = None) -> int:
        """Delete keys whose time is up (of one user, or of everyone); returns how many."""
        statement = delete(IdempotencyKeyRow).where(IdempotencyKeyRow.expires_at <= now)
        if user_id is not None:
            statement = statement.where(IdempotencyKeyRow.user_id == user_id)
        result: Any = await self.session.execute(
            statement.execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)


class RecipientRepository(Repository[RecipientRow]):
    model = RecipientRow

    async def save(self, *, user_id: str, email: str, name: str, now: datetime) -> None:
        insert = _insert_for(self.session)(RecipientRow).values(
            user_id=user_id, email=email, name=name, updated_at=now
        )
        statement = insert.on_conflict_do_update(
            index_elements=["user_id"],
            set_={"email": email, "name": name, "updated_at": now},
        )
        await self.session.execute(statement)


class NotificationRepository:
    """The notifications decided and not yet sent. A sender claims one (compare-and-set on
    ``due_at``) before it mails, so two senders never mail the same row at once."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, *, event_id: str, user_id: str, message: bytes, now: datetime) -> bool:
        """Record the notification of ``event_id``; False if that event already has one."""
        statement = (
            _insert_for(self.session)(NotificationRow)
            .values(
                event_id=event_id,
                user_id=user_id,
                message=message,
                created_at=now,
                due_at=now,
                attempts=0,
            )
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(NotificationRow.event_id)
        )
        return (await self.session.execute(statement)).scalar_one_or_none() is not None

    async def due(self, now: datetime, *, limit: int) -> list[str]:
        """The event ids of unsent notifications due by ``now``, oldest due first."""
        statement = (
            select(NotificationRow.event_id)
            .where(NotificationRow.sent_at.is_(None), NotificationRow.due_at <= now)
            .order_by(NotificationRow.due_at)
            .limit(limit)
        )
        return list((await self.session.execute(statement)).scalars())

    async def next_due(self) -> datetime | None:
        """When the earliest unsent notification is due; None when all are sent."""
        statement = select(func.min(NotificationRow.due_at)).where(
            NotificationRow.sent_at.is_(None)
        )
        value: datetime | None = (await self.session.execute(statement)).scalar_one()
        return value

    async def claim(
        self, event_id: str, *, now: datetime, until: datetime
    ) -> tuple[bytes, int] | None:
        """Hold an unsent, due notification until ``until`` and count the attempt; returns
        its message and attempt number, or None if it was sent or claimed meanwhile."""
        statement = (
            update(NotificationRow)
            .where(
                NotificationRow.event_id == event_id,
                NotificationRow.sent_at.is_(None),
                NotificationRow.due_at <= now,
            )
            .values(due_at=until, attempts=NotificationRow.attempts + 1)
            .returning(NotificationRow.message, NotificationRow.attempts)
            .execution_options(synchronize_session=False)
        )
        row = (await self.session.execute(statement)).one_or_none()
        return None if row is None else (bytes(row[0]), int(row[1]))

    async def sent(self, event_id: str, *, now: datetime) -> None:
        statement = (
            update(NotificationRow)
            .where(NotificationRow.event_id == event_id)
            .values(sent_at=now, last_error=None)
            .execution_options(synchronize_session=False)
        )
        await self.session.execute(statement)

    async def failed(self, event_id: str, *, error: str, retry_at: datetime) -> None:
        statement = (
            update(NotificationRow)
            .where(NotificationRow.event_id == event_id, NotificationRow.sent_at.is_(None))
            .values(due_at=retry_at, last_error=error[:2000])
            .execution_options(synchronize_session=False)
        )
        await self.session.execute(statement)

    async def delete_sent_before(self, cutoff: datetime) -> int:
        statement = delete(NotificationRow).where(
            NotificationRow.sent_at.is_not(None), NotificationRow.sent_at < cutoff
        )
        result: Any = await self.session.execute(
            statement.execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)
