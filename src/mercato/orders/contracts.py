"""What other contexts may import from orders: its events."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel

from mercato.messaging.events import EventData


class OrderLine(BaseModel):
    product_id: str
    quantity: int


class OrderPlaced(EventData):
    """A new order is ``pending``; products reserves its stock (all lines or none)."""

    event_type = "order.placed"

    order_id: str
    user_id: str
    items: list[OrderLine]
    total: Decimal
    currency: str


class OrderConfirmed(EventData):
    event_type = "order.confirmed"

    order_id: str
    user_id: str
    total: Decimal
    currency: str


class OrderRejected(EventData):
    event_type = "order.rejected"

    order_id: str
    user_id: str
    reason: str


class OrderCancelled(EventData):
    """The order was cancelled; products releases whatever it had reserved for it."""

    event_type = "order.cancelled"

    order_id: str
    user_id: str
    items: list[OrderLine]
