"""Every query of the orders context. Repositories work in the caller's session and never
commit; state changes are compare-and-set updates, so concurrent writers cannot undo each
other on SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import Row, Table, bindparam, delete, func, insert, select, update
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


def _move(**values: Any) -> Any:
    return (
        update(OrderRow)
        .where(
            OrderRow.id == bindparam("order_id"),
            OrderRow.status.in_(bindparam("from_", expanding=True)),
        )
        .values(status=bindparam("to"), updated_at=bindparam("now"), **values)
        .returning(OrderRow.user_id, OrderRow.total, OrderRow.currency)
        .execution_options(synchronize_session=False)
    )


#: Built once (each order is settled): see _ORDER_WITH_LINES.
_MOVE = _move()
_MOVE_WITH_REASON = _move(reason=bindparam("reason"))


#: Core inserts on the tables (a placement's two statements): the ORM's flush of an order
#: and its lines costs more than executing them.
_ORDERS: Table = OrderRow.__table__  # type: ignore[assignment]
_INSERT_ORDER = insert(_ORDERS)
_ORDER_COLUMNS = tuple(column.key for column in _ORDERS.columns)
_INSERT_LINES = insert(OrderLineRow.__table__)  # type: ignore[arg-type]
_LINE_COLUMNS = ("position", "product_id", "name", "quantity", "unit_price")
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

    async def add_placed(self, order: OrderRow) -> None:
        """Insert a new order and its lines: two statements built once, without the ORM's
        flush (the row object stays out of the session, as the caller's answer)."""
        await self.session.execute(
            _INSERT_ORDER, {name: getattr(order, name) for name in _ORDER_COLUMNS}
        )
        if order.lines:
            await self.session.execute(
                _INSERT_LINES,
                [
                    {"order_id": order.id, **{name: getattr(line, name) for name in _LINE_COLUMNS}}
                    for line in order.lines
                ],
            )

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
    ) -> MovedOrder | None:
        """Set ``to`` if the order is still in one of ``from_`` (the domain's
        ``allowed_from(to)``) and answer what the events announce of it (owner, total,
        currency); None if it was not (it moved on meanwhile, or does not exist). The check,
        the write and the answer are one statement (``RETURNING``): settling an order is
        one round trip, not a read and a write."""
        params = {
            "order_id": order_id,
            "from_": [s.value for s in from_],
            "to": to.value,
            "now": now,
            "reason": reason,
        }
        statement = _MOVE if reason is None else _MOVE_WITH_REASON
        row = (await self.session.execute(statement, params)).one_or_none()
        return None if row is None else MovedOrder(row.user_id, row.total, row.currency)

    async def status_of(self, order_id: str) -> str | None:
        """The order's status; None if there is no such order."""
        statement = select(OrderRow.status).where(OrderRow.id == order_id)
        return (await self.session.execute(statement)).scalar_one_or_none()


class MovedOrder(NamedTuple):
    """What :meth:`OrderRepository.move` answers of the order it moved."""

    user_id: str
    total: Decimal
    currency: str


#: Each dialect's INSERT, which knows ``ON CONFLICT`` (PostgreSQL and SQLite alike).
_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _insert_for(session: AsyncSession) -> Any:
    """The dialect's INSERT (SQLite's for any other dialect)."""
    return _INSERTS.get(_dialect(session), sqlite.insert)


def _per_dialect(build: Any) -> dict[str, Any]:
    """``build(insert)`` once for each dialect, looked up with :func:`_dialect`: building
    and cache-keying an INSERT with its values costs more than executing it."""
    return {name: build(insert) for name, insert in _INSERTS.items()}


def _claim_key(insert: Any) -> Any:
    return (
        insert(IdempotencyKeyRow)
        .values(
            user_id=bindparam("user_id"),
            key=bindparam("key"),
            fingerprint=bindparam("fingerprint"),
            status=IN_FLIGHT,
            created_at=bindparam("now"),
            locked_at=bindparam("now"),
            expires_at=bindparam("expires_at"),
        )
        .on_conflict_do_nothing(index_elements=["user_id", "key"])
        .returning(IdempotencyKeyRow.id)
    )


_CLAIM_KEY = _per_dialect(_claim_key)  # each placement claims a key


_COMPLETE_KEY = (
    update(IdempotencyKeyRow)
    .where(IdempotencyKeyRow.id == bindparam("row_id"))
    .values(
        status=DONE,
        response_status=bindparam("answer_status"),
        response_body=bindparam("answer_body"),
        order_id=bindparam("answer_order_id"),
    )
    .execution_options(synchronize_session=False)
)


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
        params = {
            "user_id": user_id,
            "key": key,
            "fingerprint": fingerprint,
            "now": now,
            "expires_at": expires_at,
        }
        statement = _CLAIM_KEY[_dialect(self.session)]
        row_id = (await self.session.execute(statement, params)).scalar_one_or_none()
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
        params = {
            "row_id": row_id,
            "answer_status": status,
            "answer_body": body,
            "answer_order_id": order_id,
        }
        await self.session.execute(_COMPLETE_KEY, params)

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


def _add_notification(insert: Any) -> Any:
    return (
        insert(NotificationRow)
        .values(
            event_id=bindparam("event_id"),
            user_id=bindparam("user_id"),
            message=bindparam("message"),
            created_at=bindparam("now"),
            due_at=bindparam("now"),
            attempts=0,
        )
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(NotificationRow.event_id)
    )


_ADD_NOTIFICATION = _per_dialect(_add_notification)  # one per confirmed order


class NotificationRepository:
    """The notifications decided and not yet sent. A sender claims one (compare-and-set on
    ``due_at``) before it mails, so two senders never mail the same row at once."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, *, event_id: str, user_id: str, message: bytes, now: datetime) -> bool:
        """Record the notification of ``event_id``; False if that event already has one."""
        params = {"event_id": event_id, "user_id": user_id, "message": message, "now": now}
        statement = _ADD_NOTIFICATION[_dialect(self.session)]
        return (await self.session.execute(statement, params)).scalar_one_or_none() is not None

    async def next_due(self) -> datetime | None:
        """When the earliest unsent notification is due; None when all are sent."""
        statement = select(func.min(NotificationRow.due_at)).where(
            NotificationRow.sent_at.is_(None)
        )
        value: datetime | None = (await self.session.execute(statement)).scalar_one()
        return value

    async def claim_due(
        self, now: datetime, *, until: datetime, limit: int
    ) -> list[tuple[str, bytes, int]]:
        """Hold at most ``limit`` unsent notifications due by ``now`` (the oldest due are
        taken first) until ``until`` and count the attempt; returns each one's event id, message and
        attempt number. One statement for the batch; the compare-and-set on ``due_at`` and
        ``sent_at`` is re-checked on each row, so a notification another sender claimed or
        sent meanwhile is not taken."""
        due = (
            select(NotificationRow.event_id)
            .where(NotificationRow.sent_at.is_(None), NotificationRow.due_at <= now)
            .order_by(NotificationRow.due_at)
            .limit(limit)
            .scalar_subquery()
        )
        statement = (
            update(NotificationRow)
            .where(
                NotificationRow.event_id.in_(due),
                NotificationRow.sent_at.is_(None),
                NotificationRow.due_at <= now,
            )
            .values(due_at=until, attempts=NotificationRow.attempts + 1)
            .returning(NotificationRow.event_id, NotificationRow.message, NotificationRow.attempts)
            .execution_options(synchronize_session=False)
        )
        rows = (await self.session.execute(statement)).all()
        return [(str(row[0]), bytes(row[1]), int(row[2])) for row in rows]

    async def release(self, event_ids: Collection[str], *, now: datetime) -> None:
        """Give back claimed, unsent notifications (due now, the attempt not counted)."""
        statement = (
            update(NotificationRow)
            .where(NotificationRow.event_id.in_(list(event_ids)), NotificationRow.sent_at.is_(None))
            .values(due_at=now, attempts=NotificationRow.attempts - 1)
            .execution_options(synchronize_session=False)
        )
        await self.session.execute(statement)

    async def sent(self, *event_ids: str, now: datetime) -> None:
        """Mark the notifications of ``event_ids`` sent (one statement for all)."""
        statement = (
            update(NotificationRow)
            .where(NotificationRow.event_id.in_(event_ids))
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
