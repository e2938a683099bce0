"""The orders side of the order saga: the replies of products to ``order.placed`` settle a
pending order. The handlers work in the consumer runner's unit of work (it commits the
inbox row, the order's move and the outbox row together) and never commit."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog

from mercato.messaging import Envelope, Handlers, Outbox
from mercato.orders.contracts import OrderConfirmed, OrderRejected
from mercato.orders.domain import OrderStatus, allowed_from
from mercato.orders.funnel import OrderFunnel
from mercato.orders.repository import OrderRepository
from mercato.platform.db import UnitOfWork
from mercato.products.contracts import StockRejected, StockReserved

log = structlog.stdlib.get_logger("mercato.orders")


def saga_handlers(outbox: Outbox, funnel: OrderFunnel | None = None) -> Handlers:
    """The orders service's consumer group: the replies of products to ``order.placed``,
    announcing the outcome through ``outbox`` and counting it in ``funnel``."""
    handlers = Handlers("orders")

    @handlers.on(StockReserved)
    async def on_stock_reserved(event: Envelope[StockReserved], uow: UnitOfWork) -> None:
        await confirm_order(event, uow, outbox, funnel)

    @handlers.on(StockRejected)
    async def on_stock_rejected(event: Envelope[StockRejected], uow: UnitOfWork) -> None:
        await reject_order(event, uow, outbox, funnel)

    return handlers


async def confirm_order(
    event: Envelope[StockReserved],
    uow: UnitOfWork,
    outbox: Outbox,
    funnel: OrderFunnel | None = None,
) -> None:
    """``stock.reserved``: a pending order becomes ``confirmed`` (``order.confirmed``)."""
    await _settle(
        uow, outbox, funnel, event.data.order_id, OrderStatus.CONFIRMED, event_id=event.id
    )


async def reject_order(
    event: Envelope[StockRejected],
    uow: UnitOfWork,
    outbox: Outbox,
    funnel: OrderFunnel | None = None,
) -> None:
    """``stock.rejected``: a pending order becomes ``rejected`` with the reason
    (``order.rejected``)."""
    await _settle(
        uow,
        outbox,
        funnel,
        event.data.order_id,
        OrderStatus.REJECTED,
        event_id=event.id,
        reason=event.data.reason,
    )


async def _settle(
    uow: UnitOfWork,
    outbox: Outbox,
    funnel: OrderFunnel | None,
    order_id: str,
    to: OrderStatus,
    *,
    event_id: str,
    reason: str | None = None,
) -> None:
    orders = OrderRepository(uow.session)
    now = datetime.now(UTC)
    # One statement moves the order and answers what the event needs of it.
    row = await orders.move(order_id, from_=allowed_from(to), to=to, now=now, reason=reason)
    if row is None:
        status = await orders.status_of(order_id)  # rare: say why nothing moved
        if status is None:
            log.warning("saga event for an unknown order", order_id=order_id, event_id=event_id)
            return
        # a late or repeated reply: the order is past pending; leave it be
        log.info(
            "saga event ignored",
            order_id=order_id,
            status=status,
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
    if funnel is not None:
        funnel.count_on_commit(uow, "confirmed" if to is OrderStatus.CONFIRMED else "rejected")
    log.info("order settled", order_id=order_id, status=to.value)
