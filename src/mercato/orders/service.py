"""Use cases of the orders context, each the owner of its transactions: place (idempotently),
read, list and cancel orders, prune expired idempotency keys, and the bookkeeping of the
notification mail the :class:`~mercato.orders.notifications.MailSender` sends. Each opens its
own unit of work and commits it; nothing else in the context commits (the saga's and the
notifications' handlers work in the consumer runner's unit of work)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from mercato.messaging import Outbox
from mercato.orders.catalogue import Catalogue
from mercato.orders.contracts import OrderCancelled, OrderLine, OrderPlaced
from mercato.orders.domain import (
    InvalidOrder,
    InvalidTransition,
    OrderStatus,
    PricedOrder,
    allowed_from,
    next_status,
    price_order,
)
from mercato.orders.funnel import OrderFunnel
from mercato.orders.idempotency import (
    Answer,
    IdempotencyPolicy,
    KeyInFlight,
    UnreleasedKeys,
    fingerprint_of,
    refusal,
    replay,
)
from mercato.orders.models import OrderLineRow, OrderRow
from mercato.orders.repository import (
    DONE,
    IdempotencyRepository,
    NotificationRepository,
    OrderRepository,
)
from mercato.orders.schemas import (
    OrderOut,
    OrderPage,
    PlaceOrder,
    order_out,
    order_view_out,
)
from mercato.platform.db import Database
from mercato.platform.errors import AppError, Conflict, NotFound, UnprocessableEntity
from mercato.platform.security.tokens import Principal

if TYPE_CHECKING:
    from sqlalchemy import Row

log = structlog.stdlib.get_logger("mercato.orders")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class OrdersService:
    def __init__(
        self,
        database: Database,
        catalogue: Catalogue,
        outbox: Outbox,
        *,
        policy: IdempotencyPolicy | None = None,
        clock: Clock = utc_now,
        funnel: OrderFunnel | None = None,
    ) -> None:
        self.database = database
        self.catalogue = catalogue
        self.outbox = outbox
        self.policy = policy or IdempotencyPolicy()
        self.funnel = funnel or OrderFunnel()
        self.clock = clock
        self._unreleased = UnreleasedKeys()

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
        # The one use case with two transactions: the key is claimed and committed first, so
        # that a concurrent retry sees it in flight while this one prices the order (over
        # HTTP, outside any transaction); the order is then written in a second one, which
        # completes the key, or the key is released or completed on its own after an error.
        claimed = await self._claim(user_id, key, fingerprint_of(request))
        if isinstance(claimed, Answer):
            return claimed
        try:
            return await self._create(user_id, request, key_row=claimed)
        except AppError as error:
            if error.status >= 500:
                await self._release(claimed)
                raise
            await self._remember(claimed, refusal(error), order_id=None)
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
                        "This Idempotency-Key was already used with a different request body.",
                        loc=("header", "Idempotency-Key"),
                    )
                if row.status == DONE:
                    assert row.response_status is not None
                    assert row.response_body is not None
                    return replay(row.response_status, row.response_body)
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
            raise UnprocessableEntity(str(exc), loc=("body", "items")) from None

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
            await OrderRepository(uow.session).add_placed(order)
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
            self.funnel.count_on_commit(uow, "placed")
            await uow.commit()
        log.info("order placed", order_id=order.id, total=str(priced.total))
        return answer

    # -- reading -----------------------------------------------------------------------

    async def get(self, principal: Principal, order_id: str) -> OrderOut:
        async with self.database.unit_of_work(read_only=True) as uow:
            rows = await OrderRepository(uow.session).view(order_id)
        if not rows or not _may_see(principal, rows[0]):
            raise NotFound("No such order.")
        return order_view_out(rows)

    async def page(
        self,
        principal: Principal,
        *,
        everyone: bool,
        status: OrderStatus | None = None,
        limit: int,
        offset: int,
    ) -> OrderPage:
        async with self.database.unit_of_work(read_only=True) as uow:
            rows, total = await OrderRepository(uow.session).page(
                user_id=None if everyone else principal.user_id,
                status=status,
                limit=limit,
                offset=offset,
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
            if await orders.move(order_id, from_=allowed_from(to), to=to, now=now) is None:
                raise Conflict("The order changed meanwhile and can no longer be cancelled.")
            event = OrderCancelled(
                order_id=row.id,
                user_id=row.user_id,
                items=[OrderLine(product_id=x.product_id, quantity=x.quantity) for x in row.lines],
            )
            await self.outbox.publish(uow, event, key=row.id)
            result = order_out(row, status=OrderStatus.CANCELLED, updated_at=now)
            self.funnel.count_on_commit(uow, "cancelled")
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


def _may_see(principal: Principal, row: OrderRow | Row[Any]) -> bool:
    return principal.is_admin or row.user_id == principal.user_id


# --- the notifications' mail ------------------------------------------------------------
# The handlers of mercato.orders.notifications decide a mail in the consumer's transaction;
# these are the transactions of the MailSender that mails it after that commit.


async def next_notification_due(database: Database) -> datetime | None:
    """When the earliest unsent notification is due; None when all are sent."""
    async with database.unit_of_work(read_only=True) as uow:
        return await NotificationRepository(uow.session).next_due()


async def claim_due_notifications(
    database: Database, *, now: datetime, lease: timedelta, limit: int
) -> list[tuple[str, bytes, int]]:
    """Hold at most ``limit`` notifications due by ``now`` for ``lease`` to mail them, in
    one transaction: each one's event id, message and attempt number. Those sent or claimed
    by another sender meanwhile are not among them."""
    async with database.unit_of_work() as uow:
        claimed = await NotificationRepository(uow.session).claim_due(
            now, until=now + lease, limit=limit
        )
        await uow.commit()
    return claimed


async def release_notifications(database: Database, event_ids: list[str], *, now: datetime) -> None:
    """Give back notifications claimed and not mailed (the sender stops): due again now."""
    async with database.unit_of_work() as uow:
        await NotificationRepository(uow.session).release(event_ids, now=now)
        await uow.commit()


async def notification_failed(
    database: Database, event_id: str, *, error: str, retry_at: datetime
) -> None:
    """Keep the notification of ``event_id`` unsent, due again at ``retry_at``."""
    async with database.unit_of_work() as uow:
        await NotificationRepository(uow.session).failed(event_id, error=error, retry_at=retry_at)
        await uow.commit()


async def notifications_sent(database: Database, event_ids: list[str], *, now: datetime) -> None:
    """Mark the notifications of ``event_ids`` sent (they are not mailed again)."""
    async with database.unit_of_work() as uow:
        await NotificationRepository(uow.session).sent(*event_ids, now=now)
        await uow.commit()


async def prune_sent_notifications(database: Database, *, sent_before: datetime) -> int:
    """Delete the notifications sent before ``sent_before``; returns how many."""
    async with database.unit_of_work() as uow:
        pruned = await NotificationRepository(uow.session).delete_sent_before(sent_before)
        await uow.commit()
    return pruned
