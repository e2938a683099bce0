"""Use cases of the orders context: place (idempotently), read, list and cancel orders, and
the saga's event handlers. Nothing here commits except through a unit of work it opened
itself; handlers work in the runner's unit of work and never commit."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Protocol
from urllib.parse import urlencode

import structlog

from mercato.messaging import Envelope, Handlers, Outbox
from mercato.orders.contracts import (
    OrderCancelled,
    OrderConfirmed,
    OrderLine,
    OrderPlaced,
    OrderRejected,
)
from mercato.orders.domain import (
    CENT,
    InvalidOrder,
    InvalidTransition,
    OrderStatus,
    PricedOrder,
    PricedProduct,
    allowed_from,
    next_status,
    price_order,
    request_fingerprint,
)
from mercato.orders.models import OrderLineRow, OrderRow
from mercato.orders.repository import DONE, IdempotencyRepository, OrderRepository
from mercato.orders.schemas import OrderLineOut, OrderOut, OrderPage, PlaceOrder
from mercato.platform.db import Database, UnitOfWork
from mercato.platform.errors import AppError, Conflict, NotFound, UnprocessableEntity
from mercato.platform.http import ServiceClient
from mercato.platform.security.tokens import Principal
from mercato.products.contracts import StockRejected, StockReserved

log = structlog.stdlib.get_logger("mercato.orders")

JSON: Final = "application/json"
PROBLEM_JSON: Final = "application/problem+json"

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- the products upstream --------------------------------------------------------------


class Catalogue(Protocol):
    async def priced(self, product_ids: Sequence[str]) -> dict[str, PricedProduct]:
        """Every product of ``product_ids`` with its current name, price and currency;
        :class:`~mercato.platform.errors.UnprocessableEntity` naming those that do not
        exist; a 503 error when the catalogue cannot answer."""
        ...


class ProductsCatalogue:
    """The products service, read through a resilient :class:`ServiceClient`: one
    ``GET /products?ids=`` for the whole order (DESIGN.md), never one call per line."""

    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    async def priced(self, product_ids: Sequence[str]) -> dict[str, PricedProduct]:
        # The list's commas separate ids, so an id with a comma cannot be asked for: no
        # product has one. A repeated id is asked for once.
        wanted = sorted({pid for pid in product_ids if "," not in pid})
        found = await self._read(wanted) if wanted else {}
        unknown = [index for index, pid in enumerate(product_ids) if pid not in found]
        if unknown:
            raise UnprocessableEntity(
                "The order names products that do not exist.",
                errors=[
                    {"loc": ["body", "items", i, "product_id"], "msg": "unknown product"}
                    for i in unknown
                ],
            )
        return found

    async def _read(self, product_ids: Sequence[str]) -> dict[str, PricedProduct]:
        # ``limit``: every id on the one page, whatever the catalogue's default page size.
        query = urlencode({"ids": ",".join(product_ids), "limit": len(product_ids)}, safe=",")
        answer = await self.client.get(f"/products?{query}")
        if answer.status != 200:
            # Nothing but the ids varies in this request: the catalogue refused them (a
            # list too long for its request line, say), so no product has them.
            log.warning("the catalogue refused an order's product ids", status=answer.status)
            raise UnprocessableEntity(
                "The catalogue refused the order's product ids.",
                errors=[{"loc": ["body", "items"], "msg": "unknown products"}],
            )
        wanted = set(product_ids)
        return {
            str(data["id"]): PricedProduct(
                product_id=str(data["id"]),
                name=str(data["name"]),
                price=_decimal(data["price"]),
                currency=str(data.get("currency") or "USD"),
            )
            for data in answer.json()["items"]
            if data["id"] in wanted
        }


def _decimal(value: Any) -> Decimal:
    return Decimal(str(value))


# --- answers ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer kept as text, so that an idempotent retry gets the very same one."""

    status: int
    body: str
    replayed: bool = False

    @property
    def media_type(self) -> str:
        return PROBLEM_JSON if self.status >= 400 else JSON


def order_out(row: OrderRow, **changes: Any) -> OrderOut:
    lines = [
        OrderLineOut(
            product_id=line.product_id,
            name=line.name,
            quantity=line.quantity,
            unit_price=line.unit_price,
            line_total=(line.unit_price * line.quantity).quantize(CENT),
        )
        for line in row.lines
    ]
    values: dict[str, Any] = {
        "id": row.id,
        "user_id": row.user_id,
        "status": OrderStatus(row.status),
        "reason": row.reason,
        "items": lines,
        "total": row.total,
        "currency": row.currency,
        "shipping_address": row.shipping_address,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }
    values.update(changes)
    return OrderOut(**values)


def problem_body(error: AppError) -> str:
    slug = error.slug or f"http-{error.status}"
    body = {
        "type": f"urn:mercato:problem:{slug}",
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        **error.extra,
    }
    return json.dumps(body, default=str)


# --- the use cases ----------------------------------------------------------------------


class KeyInFlight(Conflict):
    """409: the first request with this Idempotency-Key has not finished yet."""

    slug = "idempotency-key-in-flight"
    headers = {"Retry-After": "1"}


#: Keys an outage left in flight that this process remembers to retake early.
MAX_UNRELEASED = 10_000


@dataclass(frozen=True, slots=True)
class IdempotencyPolicy:
    ttl: timedelta = timedelta(hours=24)
    lock_timeout: timedelta = timedelta(seconds=60)


class OrdersService:
    def __init__(
        self,
        database: Database,
        catalogue: Catalogue,
        outbox: Outbox,
        *,
        policy: IdempotencyPolicy | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self.database = database
        self.catalogue = catalogue
        self.outbox = outbox
        self.policy = policy or IdempotencyPolicy()
        self.clock = clock
        #: Key rows whose request ended here but whose release failed (the database was
        #: down): nothing holds them, so a retry here takes them over at once instead of
        #: waiting out the lock timeout. Bounded; a key dropped from it waits the timeout.
        self._unreleased: set[int] = set()

    # -- placing -----------------------------------------------------------------------

    async def place(self, user_id: str, request: PlaceOrder, key: str | None) -> Answer:
        """Place an order as ``pending`` with its ``order.placed`` event, in one transaction.

        With an ``Idempotency-Key``: the first request with the key runs, later ones with the
        same body get its answer again, a different body 422, and a retry while the first
        is still running 409. An error that may pass (503) frees the key for a retry (if
        the database cannot even free it, the retry on this instance retakes it); an
        answer (201 or a 4xx about the order itself) is kept with the key.
        """
        if key is None:
            return await self._create(user_id, request, key_row=None)
        fingerprint = request_fingerprint(request.model_dump(mode="json"))
        claimed = await self._claim(user_id, key, fingerprint)
        if isinstance(claimed, Answer):
            return claimed
        try:
            return await self._create(user_id, request, key_row=claimed)
        except AppError as error:
            if error.status >= 500:
                await self._release(claimed)
                raise
            answer = Answer(error.status, problem_body(error))
            await self._remember(claimed, answer, order_id=None)
            raise
        except BaseException:
            await asyncio.shield(self._release(claimed))
            raise

    async def _claim(self, user_id: str, key: str, fingerprint: str) -> int | Answer:
        now = self.clock()
        for _ in range(3):
            async with self.database.unit_of_work() as uow:
                keys = IdempotencyRepository(uow.session)
                row_id = await keys.claim(
                    user_id=user_id,
                    key=key,
                    fingerprint=fingerprint,
                    now=now,
                    expires_at=now + self.policy.ttl,
                )
                if row_id is not None:
                    await uow.commit()
                    return row_id
                row = await keys.get(user_id=user_id, key=key)
                if row is None:  # released or pruned since the insert: claim again
                    continue
                if row.expires_at <= now:
                    await keys.delete_expired(now, user_id=user_id)
                    await uow.commit()
                    continue
                if row.fingerprint != fingerprint:
                    raise UnprocessableEntity(
                        "This Idempotency-Key was already used with a different request body."
                    )
                if row.status == DONE:
                    assert row.response_status is not None
                    assert row.response_body is not None
                    return Answer(row.response_status, row.response_body, replayed=True)
                stale = row.locked_at <= now - self.policy.lock_timeout
                orphaned = row.id in self._unreleased
                if (stale or orphaned) and await keys.take_over(
                    row.id, locked_at=row.locked_at, now=now
                ):
                    await uow.commit()
                    self._unreleased.discard(row.id)
                    log.warning("idempotency key taken over", user_id=user_id, key_id=row.id)
                    return row.id
                raise KeyInFlight(
                    "A request with this Idempotency-Key is still being processed; retry later."
                )
        raise KeyInFlight("This Idempotency-Key is changing hands; retry later.")

    async def _release(self, key_row: int) -> None:
        try:
            async with self.database.unit_of_work() as uow:
                await IdempotencyRepository(uow.session).release(key_row)
                await uow.commit()
        except Exception:  # a retry here retakes it; elsewhere, after the lock timeout
            if len(self._unreleased) >= MAX_UNRELEASED:
                self._unreleased.pop()
            self._unreleased.add(key_row)
            log.warning("idempotency key not released", key_id=key_row, exc_info=True)

    async def _remember(self, key_row: int, answer: Answer, *, order_id: str | None) -> None:
        async with self.database.unit_of_work() as uow:
            keys = IdempotencyRepository(uow.session)
            await keys.complete(key_row, status=answer.status, body=answer.body, order_id=order_id)
            await uow.commit()

    async def _price(self, request: PlaceOrder) -> PricedOrder:
        product_ids = [item.product_id for item in request.items]
        products = await self.catalogue.priced(product_ids)
        try:
            return price_order([(i.product_id, i.quantity) for i in request.items], products)
        except InvalidOrder as exc:
            raise UnprocessableEntity(str(exc)) from None

    async def _create(self, user_id: str, request: PlaceOrder, *, key_row: int | None) -> Answer:
        priced = await self._price(request)  # before any transaction: nothing is held open
        now = self.clock()
        order = OrderRow(
            id=_new_id(),
            user_id=user_id,
            status=OrderStatus.PENDING.value,
            reason=None,
            total=priced.total,
            currency=priced.currency,
            shipping_address=request.shipping_address,
            created_at=now,
            updated_at=now,
            lines=[
                OrderLineRow(
                    position=position,
                    product_id=line.product_id,
                    name=line.name,
                    quantity=line.quantity,
                    unit_price=line.unit_price,
                )
                for position, line in enumerate(priced.lines)
            ],
        )
        answer = Answer(201, order_out(order).model_dump_json())
        async with self.database.unit_of_work() as uow:
            OrderRepository(uow.session).add(order)
            event = OrderPlaced(
                order_id=order.id,
                user_id=user_id,
                items=[
                    OrderLine(product_id=x.product_id, quantity=x.quantity) for x in priced.lines
                ],
                total=priced.total,
                currency=priced.currency,
            )
            await self.outbox.publish(uow, event, key=order.id)
            if key_row is not None:
                keys = IdempotencyRepository(uow.session)
                await keys.complete(key_row, status=201, body=answer.body, order_id=order.id)
            await uow.commit()
        log.info("order placed", order_id=order.id, total=str(priced.total))
        return answer

    # -- reading -----------------------------------------------------------------------

    async def get(self, principal: Principal, order_id: str) -> OrderOut:
        async with self.database.unit_of_work(read_only=True) as uow:
            row = await OrderRepository(uow.session).get(order_id)
            if row is None or not _may_see(principal, row):
                raise NotFound("No such order.")
            return order_out(row)

    async def page(
        self, principal: Principal, *, everyone: bool, limit: int, offset: int
    ) -> OrderPage:
        async with self.database.unit_of_work(read_only=True) as uow:
            rows, total = await OrderRepository(uow.session).page(
                user_id=None if everyone else principal.user_id, limit=limit, offset=offset
            )
            return OrderPage(
                items=[order_out(row) for row in rows], total=total, limit=limit, offset=offset
            )

    # -- cancelling --------------------------------------------------------------------

    async def cancel(self, principal: Principal, order_id: str) -> OrderOut:
        """Cancel a ``pending`` or ``confirmed`` order and announce it (stock is released);
        409 from any other state."""
        now = self.clock()
        async with self.database.unit_of_work() as uow:
            orders = OrderRepository(uow.session)
            row = await orders.get(order_id)
            if row is None or not _may_see(principal, row):
                raise NotFound("No such order.")
            try:
                to = next_status(OrderStatus(row.status), OrderStatus.CANCELLED)
            except InvalidTransition as exc:
                raise Conflict(f"The order can no longer be cancelled: {exc}.") from None
            if not await orders.move(order_id, from_=allowed_from(to), to=to, now=now):
                raise Conflict("The order changed meanwhile and can no longer be cancelled.")
            event = OrderCancelled(
                order_id=row.id,
                user_id=row.user_id,
                items=[OrderLine(product_id=x.product_id, quantity=x.quantity) for x in row.lines],
            )
            await self.outbox.publish(uow, event, key=row.id)
            result = order_out(row, status=OrderStatus.CANCELLED, updated_at=now)
            await uow.commit()
        log.info("order cancelled", order_id=order_id, by=principal.user_id)
        return result

    # -- housekeeping ------------------------------------------------------------------

    async def prune_idempotency_keys(self) -> int:
        """Delete every expired idempotency key; returns how many."""
        async with self.database.unit_of_work() as uow:
            count = await IdempotencyRepository(uow.session).delete_expired(self.clock())
            await uow.commit()
        return count


def _new_id() -> str:
    return str(uuid.uuid4())


def _may_see(principal: Principal, row: OrderRow) -> bool:
    return principal.is_admin or row.user_id == principal.user_id


# --- the saga ---------------------------------------------------------------------------


def saga_handlers(outbox: Outbox) -> Handlers:
    """The orders service's consumer group: the replies of products to ``order.placed``,
    announcing the outcome through ``outbox``."""
    handlers = Handlers("orders")

    @handlers.on(StockReserved)
    async def on_stock_reserved(event: Envelope[StockReserved], uow: UnitOfWork) -> None:
        await confirm_order(event, uow, outbox)

    @handlers.on(StockRejected)
    async def on_stock_rejected(event: Envelope[StockRejected], uow: UnitOfWork) -> None:
        await reject_order(event, uow, outbox)

    return handlers


async def confirm_order(event: Envelope[StockReserved], uow: UnitOfWork, outbox: Outbox) -> None:
    """``stock.reserved``: a pending order becomes ``confirmed`` (``order.confirmed``)."""
    await _settle(uow, outbox, event.data.order_id, OrderStatus.CONFIRMED, event_id=event.id)


async def reject_order(event: Envelope[StockRejected], uow: UnitOfWork, outbox: Outbox) -> None:
    """``stock.rejected``: a pending order becomes ``rejected`` with the reason
    (``order.rejected``)."""
    await _settle(
        uow,
        outbox,
        event.data.order_id,
        OrderStatus.REJECTED,
        event_id=event.id,
        reason=event.data.reason,
    )


async def _settle(
    uow: UnitOfWork,
    outbox: Outbox,
    order_id: str,
    to: OrderStatus,
    *,
    event_id: str,
    reason: str | None = None,
    clock: Clock = utc_now,
) -> None:
    orders = OrderRepository(uow.session)
    row = await orders.get(order_id)
    if row is None:
        log.warning("saga event for an unknown order", order_id=order_id, event_id=event_id)
        return
    moved = await orders.move(order_id, from_=allowed_from(to), to=to, now=clock(), reason=reason)
    if not moved:  # a late or repeated reply: the order is past pending; leave it be
        log.info(
            "saga event ignored",
            order_id=order_id,
            status=row.status,
            wanted=to.value,
            event_id=event_id,
        )
        return
    if to is OrderStatus.CONFIRMED:
        await outbox.publish(
            uow,
            OrderConfirmed(
                order_id=order_id, user_id=row.user_id, total=row.total, currency=row.currency
            ),
            key=order_id,
        )
    else:
        await outbox.publish(
            uow,
            OrderRejected(order_id=order_id, user_id=row.user_id, reason=reason or "rejected"),
            key=order_id,
        )
    log.info("order settled", order_id=order_id, status=to.value)
