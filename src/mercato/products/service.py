"""Use cases of the products context: catalogue writes and reads, and the stock half of
the order saga. Each catalogue use case opens its unit of work and commits it; the cache is
invalidated after that commit (``uow.after_commit``), before the write returns. The stock
handlers run in the consumer runner's transaction and never commit it."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal

import structlog
from sqlalchemy.exc import IntegrityError

from mercato.messaging import Envelope, Handlers, Outbox
from mercato.orders.contracts import OrderCancelled, OrderPlaced
from mercato.platform.db import Database, UnitOfWork
from mercato.platform.errors import Conflict, NotFound
from mercato.products.caching import CatalogueCache, Representation
from mercato.products.contracts import (
    ProductCreated,
    ProductDeleted,
    ProductUpdated,
    ReservedLine,
    ShortLine,
    StockRejected,
    StockReleased,
    StockReserved,
)
from mercato.products.domain import (
    Line,
    ProductSort,
    ReservationStatus,
    Shortfall,
    merge_lines,
    shortfalls,
)
from mercato.products.models import ProductRow
from mercato.products.repository import (
    ProductFilter,
    ProductRepository,
    ReservationRepository,
)
from mercato.products.schemas import ProductCreate, ProductOut, ProductPage, ProductUpdate

log = structlog.stdlib.get_logger("mercato.products")

INSUFFICIENT_STOCK = "insufficient stock"
INVALID_QUANTITY = "invalid quantity"


class ProductNotFound(NotFound):
    slug = "product-not-found"

    def __init__(self) -> None:
        super().__init__("No product has this id.")


class DuplicateSku(Conflict):
    slug = "duplicate-sku"

    def __init__(self, sku: str) -> None:
        super().__init__(f"A product with sku {sku!r} exists already.")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _snapshot(row: ProductRow) -> dict[str, object]:
    return {
        "product_id": row.id,
        "sku": row.sku,
        "name": row.name,
        "price": row.price,
        "currency": row.currency,
        "category": row.category,
        "stock": row.stock,
    }


def _after_commit_invalidate(
    uow: UnitOfWork, cache: CatalogueCache, product_ids: Iterable[str]
) -> None:
    uow.after_commit(functools.partial(cache.invalidate, list(product_ids)))


# --- catalogue writes ---------------------------------------------------------------------


async def create_product(
    db: Database, outbox: Outbox, cache: CatalogueCache, data: ProductCreate
) -> ProductOut:
    """Add a product (``product.created``); :class:`DuplicateSku` if the sku is taken."""
    async with db.unit_of_work() as uow:
        created = product_out(await _add_product(uow, outbox, cache, data))
        await uow.commit()
    return created


async def _add_product(
    uow: UnitOfWork, outbox: Outbox, cache: CatalogueCache, data: ProductCreate
) -> ProductRow:
    """The product row and its ``product.created`` event, in the caller's unit of work."""
    await cache.ensure_writable()
    products = ProductRepository(uow.session)
    if await products.sku_exists(data.sku):
        raise DuplicateSku(data.sku)
    now = utcnow()
    row = ProductRow(
        id=str(uuid.uuid4()), **data.model_dump(), version=1, created_at=now, updated_at=now
    )
    products.add(row)
    try:
        await products.flush()
    except IntegrityError:  # a concurrent create took the sku between the check and here
        raise DuplicateSku(data.sku) from None
    await outbox.publish(uow, ProductCreated(**_snapshot(row)), key=row.id)
    _after_commit_invalidate(uow, cache, ())
    return row


async def update_product(
    db: Database,
    outbox: Outbox,
    cache: CatalogueCache,
    product_id: str,
    data: ProductUpdate,
) -> ProductOut:
    """Change some fields of a product (``product.updated`` if anything changed)."""
    await cache.ensure_writable()
    async with db.unit_of_work() as uow:
        products = ProductRepository(uow.session)
        row = await _locked_product(products, product_id)
        changes = {
            name: value for name, value in data.changes().items() if getattr(row, name) != value
        }
        if changes:
            for name, value in changes.items():
                setattr(row, name, value)
            row.version += 1
            row.updated_at = utcnow()
            await products.flush()
            await outbox.publish(uow, ProductUpdated(**_snapshot(row)), key=row.id)
            _after_commit_invalidate(uow, cache, [row.id])
        updated = product_out(row)
        await uow.commit()
    return updated


async def _locked_product(products: ProductRepository, product_id: str) -> ProductRow:
    """The product, locked until the transaction ends; :class:`ProductNotFound` if none."""
    row = None if "\x00" in product_id else await products.get_for_update(product_id)
    if row is None:
        raise ProductNotFound
    return row


async def delete_product(
    db: Database, outbox: Outbox, cache: CatalogueCache, product_id: str
) -> None:
    """Remove a product (``product.deleted``)."""
    await cache.ensure_writable()
    async with db.unit_of_work() as uow:
        products = ProductRepository(uow.session)
        row = await _locked_product(products, product_id)
        await products.delete(row)
        await outbox.publish(uow, ProductDeleted(product_id=row.id, sku=row.sku), key=row.id)
        _after_commit_invalidate(uow, cache, [row.id])
        await uow.commit()


async def seed_catalogue(
    db: Database, outbox: Outbox, cache: CatalogueCache, catalogue: Sequence[ProductCreate]
) -> int:
    """Add the products of ``catalogue`` whose sku is not taken yet, in one transaction;
    return how many.

    Idempotent: a second run adds nothing, nor does one that races another (the other
    one's transaction adds the products). Each product is announced like any other.
    """
    try:
        async with db.unit_of_work() as uow:
            products = ProductRepository(uow.session)
            taken = await products.existing_skus(item.sku for item in catalogue)
            added = 0
            for item in catalogue:
                if item.sku in taken:
                    continue
                await _add_product(uow, outbox, cache, item)
                taken.add(item.sku)
                added += 1
            await uow.commit()
    except DuplicateSku:  # another instance (a gunicorn worker beside this one) seeds now
        return 0
    return added


async def catalogue_size(db: Database) -> int:
    """How many products the catalogue holds."""
    async with db.unit_of_work(read_only=True) as uow:
        return await ProductRepository(uow.session).count_all()


# --- catalogue reads ----------------------------------------------------------------------


def product_out(row: ProductRow) -> ProductOut:
    return ProductOut.model_validate(row, from_attributes=True)


async def read_product(db: Database, cache: CatalogueCache, product_id: str) -> Representation:
    """The product's JSON representation with its validators, from the cache if it can."""

    if "\x00" in product_id:  # no such id can exist (and PostgreSQL text refuses NUL)
        raise ProductNotFound

    async def load() -> Representation:
        async with db.unit_of_work(read_only=True) as uow:
            row = await ProductRepository(uow.session).get(product_id)
            if row is None:
                raise ProductNotFound
            body = product_out(row).model_dump_json().encode()
            return Representation.of(body, row.updated_at)

    return await cache.product(product_id, load)


async def read_product_page(
    db: Database,
    cache: CatalogueCache,
    where: ProductFilter,
    sort: ProductSort,
    *,
    limit: int,
    offset: int,
) -> Representation:
    """One page of the filtered catalogue as JSON, from the cache if it can."""

    async def load() -> Representation:
        async with db.unit_of_work(read_only=True) as uow:
            rows, total = await ProductRepository(uow.session).page(
                where, sort, limit=limit, offset=offset
            )
            page = ProductPage(
                items=[product_out(row) for row in rows], total=total, limit=limit, offset=offset
            )
        return Representation.of(page.model_dump_json().encode())

    params = {
        "q": where.q,
        "category": where.category,
        "min_price": _money_key(where.min_price),
        "max_price": _money_key(where.max_price),
        "ids": None if where.ids is None else sorted(where.ids),
        "sort": sort.value,
        "limit": limit,
        "offset": offset,
    }
    return await cache.product_list(params, load)


def _money_key(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:.2f}"


# --- the stock half of the order saga -----------------------------------------------------


async def reserve_stock(
    uow: UnitOfWork, outbox: Outbox, cache: CatalogueCache, order: OrderPlaced
) -> bool | None:
    """Reserve every line of ``order``, or none, and announce which.

    Each line is one conditional update (``stock >= quantity``) evaluated by the database
    against the latest committed row; with several lines, inside a savepoint: the first line
    that cannot be covered rolls every line back. Returns True (``stock.reserved``), False
    (``stock.rejected`` with the short lines) or None when this order was decided before
    (a redelivery, or a cancellation that arrived first): then nothing is published.
    """
    reservations = ReservationRepository(uow.session)
    if await reservations.status_of(order.order_id) is not None:
        return None
    now = utcnow()
    if any(item.quantity < 1 for item in order.items):
        await reservations.record(order.order_id, ReservationStatus.REJECTED, (), now)
        await outbox.publish(
            uow,
            StockRejected(order_id=order.order_id, reason=INVALID_QUANTITY),
            key=order.order_id,
        )
        return False
    products = ProductRepository(uow.session)
    lines = merge_lines(Line(item.product_id, item.quantity) for item in order.items)
    # The reservation is written before the stock is taken: from the take (which locks the
    # product rows) to the commit only the event and the inbox row remain to be written, so
    # the orders of a hot product queue on its row for as short as can be.
    await reservations.record(order.order_id, ReservationStatus.RESERVED, lines, now)
    short_line = await _take_all(uow, products, lines, now)
    reserved = short_line is None
    if short_line is None:
        event: StockReserved | StockRejected = StockReserved(
            order_id=order.order_id,
            items=[ReservedLine(product_id=li.product_id, quantity=li.quantity) for li in lines],
        )
        _after_commit_invalidate(uow, cache, [line.product_id for line in lines])
    else:
        levels = await products.stock_levels(line.product_id for line in lines)
        # Stock may come back between the failed update and this read: name that line anyway.
        short = shortfalls(lines, levels) or [
            Shortfall(
                short_line.product_id, short_line.quantity, levels.get(short_line.product_id, 0)
            )
        ]
        await reservations.reject(order.order_id, now)
        event = StockRejected(
            order_id=order.order_id,
            reason=INSUFFICIENT_STOCK,
            short=[
                ShortLine(product_id=s.product_id, requested=s.requested, available=s.available)
                for s in short
            ],
        )
    await outbox.publish(uow, event, key=order.order_id)
    log.info(
        "stock reserved" if reserved else "stock rejected",
        order_id=order.order_id,
        lines=len(lines),
    )
    return reserved


async def _take_all(
    uow: UnitOfWork, products: ProductRepository, lines: Sequence[Line], now: datetime
) -> Line | None:
    """Take the stock of every line, or of none: None when taken, else the first line that
    could not be covered. One line is one conditional update, which changes nothing when it
    fails; several are taken in a savepoint, rolled back at the first line that cannot be
    covered (two round trips more, so only when needed)."""
    if len(lines) == 1:
        return None if await products.take_stock(lines[0], now) else lines[0]
    savepoint = await uow.session.begin_nested()
    for line in lines:
        if not await products.take_stock(line, now):
            await savepoint.rollback()
            return line
    await savepoint.commit()
    return None


async def release_stock(
    uow: UnitOfWork, outbox: Outbox, cache: CatalogueCache, order: OrderCancelled
) -> bool:
    """Give back what ``order`` reserved, exactly once (``stock.released``).

    A cancellation that arrives before its ``order.placed`` leaves a tombstone, so that the
    late placement reserves nothing. Returns whether stock was released now.
    """
    reservations = ReservationRepository(uow.session)
    now = utcnow()
    status = await reservations.status_of(order.order_id)
    if status is None:
        await reservations.record(order.order_id, ReservationStatus.CANCELLED, (), now)
        return False
    if status != ReservationStatus.RESERVED:
        return False
    # Conditional: of two concurrent releases of one order, only one moves it.
    if not await reservations.transition(
        order.order_id, ReservationStatus.RESERVED, ReservationStatus.RELEASED, now
    ):
        return False
    lines = await reservations.lines_of(order.order_id)
    products = ProductRepository(uow.session)
    for line in lines:
        await products.put_back_stock(line, now)
    await outbox.publish(
        uow,
        StockReleased(
            order_id=order.order_id,
            items=[ReservedLine(product_id=li.product_id, quantity=li.quantity) for li in lines],
        ),
        key=order.order_id,
    )
    _after_commit_invalidate(uow, cache, [line.product_id for line in lines])
    log.info("stock released", order_id=order.order_id, lines=len(lines))
    return True


def stock_handlers(outbox: Outbox, cache: CatalogueCache) -> Handlers:
    """The products service's consumers: its half of the order saga, announcing each
    outcome through ``outbox``."""
    handlers = Handlers("products")

    @handlers.on(OrderPlaced)
    async def reserve_order_stock(event: Envelope[OrderPlaced], uow: UnitOfWork) -> None:
        await reserve_stock(uow, outbox, cache, event.data)

    @handlers.on(OrderCancelled)
    async def release_order_stock(event: Envelope[OrderCancelled], uow: UnitOfWork) -> None:
        await release_stock(uow, outbox, cache, event.data)

    return handlers
