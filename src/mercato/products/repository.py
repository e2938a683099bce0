"""Every query of the products context. Parameterized throughout; never commits."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.platform.repository import Repository
from mercato.products.domain import (
    LIKE_ESCAPE,
    Line,
    ProductSort,
    ReservationStatus,
    contains_pattern,
)
from mercato.products.models import ProductRow, ReservationLineRow, ReservationRow

_SORT_COLUMNS = {
    "name": ProductRow.name,
    "price": ProductRow.price,
    "created_at": ProductRow.created_at,
}


@dataclass(frozen=True, slots=True)
class ProductFilter:
    """The list filters of API.md, already validated."""

    q: str | None = None
    category: str | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    #: Exactly these products (``ids``), or any.
    ids: frozenset[str] | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.q:
            pattern = contains_pattern(self.q)
            found.append(
                or_(
                    ProductRow.name.ilike(pattern, escape=LIKE_ESCAPE),
                    ProductRow.description.ilike(pattern, escape=LIKE_ESCAPE),
                )
            )
        if self.category is not None:
            found.append(ProductRow.category == self.category)
        if self.min_price is not None:
            found.append(ProductRow.price >= self.min_price)
        if self.max_price is not None:
            found.append(ProductRow.price <= self.max_price)
        if self.ids is not None:
            found.append(ProductRow.id.in_(sorted(self.ids)))
        return found


# The saga's statements, built once: a DML statement with its values costs more to build
# and cache-key than to execute (about 180 us per call, where a round trip is less).
_TAKE_STOCK = (
    update(ProductRow)
    .where(ProductRow.id == bindparam("product_id"), ProductRow.stock >= bindparam("quantity"))
    .values(
        stock=ProductRow.stock - bindparam("quantity"),
        version=ProductRow.version + 1,
        updated_at=bindparam("now"),
    )
    .execution_options(synchronize_session=False)
)
_RESERVATION_STATUS = select(ReservationRow.status).where(
    ReservationRow.order_id == bindparam("order_id")
)
_RECORD_RESERVATION = insert(ReservationRow).values(
    order_id=bindparam("order_id"),
    status=bindparam("status"),
    created_at=bindparam("now"),
    updated_at=bindparam("now"),
)
_RECORD_LINES = insert(ReservationLineRow)
_REJECT_RESERVATION = (
    update(ReservationRow)
    .where(ReservationRow.order_id == bindparam("rejected_order_id"))
    .values(status=bindparam("new_status"), updated_at=bindparam("now"))
    .execution_options(synchronize_session=False)
)
_FORGET_LINES = delete(ReservationLineRow).where(
    ReservationLineRow.order_id == bindparam("order_id")
)


class ProductRepository(Repository[ProductRow]):
    model = ProductRow

    async def get_for_update(self, product_id: str) -> ProductRow | None:
        """The row, locked until the transaction ends (PostgreSQL; SQLite locks the file)."""
        statement = select(ProductRow).where(ProductRow.id == product_id).with_for_update()
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def sku_exists(self, sku: str) -> bool:
        statement = select(ProductRow.id).where(ProductRow.sku == sku)
        return (await self.session.execute(statement)).first() is not None

    async def existing_skus(self, skus: Iterable[str]) -> set[str]:
        statement = select(ProductRow.sku).where(ProductRow.sku.in_(list(skus)))
        return set((await self.session.execute(statement)).scalars())

    async def count_all(self) -> int:
        return int((await self.session.execute(select(func.count(ProductRow.id)))).scalar_one())

    async def delete(self, row: ProductRow) -> None:
        await self.session.delete(row)
        await self.session.flush()

    async def page(
        self, where: ProductFilter, sort: ProductSort, *, limit: int, offset: int
    ) -> tuple[Sequence[ProductRow], int]:
        """One page of the filtered catalogue in ``sort`` order (ties broken by id), and
        how many products match in all."""
        conditions = where.conditions()
        column = _SORT_COLUMNS[sort.field]
        order = column.desc() if sort.descending else column.asc()
        statement = (
            select(ProductRow)
            .where(*conditions)
            .order_by(order, ProductRow.id.asc())
            .limit(limit)
            .offset(offset)
        )
        rows = (await self.session.execute(statement)).scalars().all()
        if len(rows) < limit and (rows or not offset):
            # A page that is not full and not past the end is the last one: the count is
            # known without asking (an order's ``ids=`` read is always such a page).
            return rows, offset + len(rows)
        total = (
            await self.session.execute(select(func.count(ProductRow.id)).where(*conditions))
        ).scalar_one()
        return rows, int(total)

    # --- stock --------------------------------------------------------------------------

    async def take_stock(self, line: Line, now: datetime) -> bool:
        """Decrement the stock of one product by ``line.quantity`` if, and only if, that
        much is left; the condition is evaluated by the database against the latest row."""
        params = {"product_id": line.product_id, "quantity": line.quantity, "now": now}
        result: CursorResult[Any] = await self.session.execute(_TAKE_STOCK, params)  # type: ignore[assignment]
        return result.rowcount == 1

    async def put_back_stock(self, line: Line, now: datetime) -> bool:
        """Give ``line.quantity`` back to a product; False if it no longer exists."""
        statement = (
            update(ProductRow)
            .where(ProductRow.id == line.product_id)
            .values(
                stock=ProductRow.stock + line.quantity,
                version=ProductRow.version + 1,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        result: CursorResult[Any] = await self.session.execute(statement)  # type: ignore[assignment]
        return result.rowcount == 1

    async def stock_levels(self, product_ids: Iterable[str]) -> dict[str, int]:
        statement = select(ProductRow.id, ProductRow.stock).where(
            ProductRow.id.in_(list(product_ids))
        )
        return {row.id: row.stock for row in await self.session.execute(statement)}


class ReservationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def status_of(self, order_id: str) -> str | None:
        result = await self.session.execute(_RESERVATION_STATUS, {"order_id": order_id})
        return result.scalar_one_or_none()

    async def record(
        self, order_id: str, status: str, lines: Sequence[Line], now: datetime
    ) -> None:
        """Insert the order's reservation; a second one for the same order violates the key."""
        await self.session.execute(
            _RECORD_RESERVATION, {"order_id": order_id, "status": status, "now": now}
        )
        if lines:
            await self.session.execute(
                _RECORD_LINES,
                [
                    {"order_id": order_id, "product_id": line.product_id, "quantity": line.quantity}
                    for line in lines
                ],
            )

    async def reject(self, order_id: str, now: datetime) -> None:
        """Turn the order's reservation, recorded in this transaction, into a rejection
        (without lines): its stock could not be taken."""
        await self.session.execute(
            _REJECT_RESERVATION,
            {"rejected_order_id": order_id, "new_status": ReservationStatus.REJECTED, "now": now},
        )
        await self.session.execute(_FORGET_LINES, {"order_id": order_id})

    async def transition(self, order_id: str, old: str, new: str, now: datetime) -> bool:
        """Move the reservation from ``old`` to ``new``; only one concurrent caller wins."""
        statement = (
            update(ReservationRow)
            .where(ReservationRow.order_id == order_id, ReservationRow.status == old)
            .values(status=new, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        result: CursorResult[Any] = await self.session.execute(statement)  # type: ignore[assignment]
        return result.rowcount == 1

    async def lines_of(self, order_id: str) -> list[Line]:
        statement = (
            select(ReservationLineRow.product_id, ReservationLineRow.quantity)
            .where(ReservationLineRow.order_id == order_id)
            .order_by(ReservationLineRow.product_id)
        )
        return [Line(row.product_id, row.quantity) for row in await self.session.execute(statement)]
