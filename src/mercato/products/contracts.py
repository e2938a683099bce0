"""What other contexts may import from products: its events."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel

from mercato.messaging.events import EventData


class ProductSnapshot(EventData):
    """The product as it is after a change (``product.created`` / ``product.updated``)."""

    product_id: str
    sku: str
    name: str
    price: Decimal
    currency: str
    category: str
    stock: int


class ProductCreated(ProductSnapshot):
    event_type = "product.created"


class ProductUpdated(ProductSnapshot):
    event_type = "product.updated"


class ProductDeleted(EventData):
    event_type = "product.deleted"

    product_id: str
    sku: str


class ReservedLine(BaseModel):
    product_id: str
    quantity: int


class ShortLine(BaseModel):
    """A line that could not be reserved: how much was asked for and how much was left."""

    product_id: str
    requested: int
    available: int


class StockReserved(EventData):
    """Every line of ``order_id`` was reserved, atomically."""

    event_type = "stock.reserved"

    order_id: str
    items: list[ReservedLine]


class StockRejected(EventData):
    """Nothing of ``order_id`` was reserved; ``short`` names the lines that lacked stock."""

    event_type = "stock.rejected"

    order_id: str
    reason: str
    short: list[ShortLine] = []


class StockReleased(EventData):
    """What ``order_id`` had reserved was put back (after ``order.cancelled``)."""

    event_type = "stock.released"

    order_id: str
    items: list[ReservedLine]
