"""Request and response bodies of the orders API (API.md, "Orders service")."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator

from mercato.orders.domain import (
    CENT,
    MAX_DISTINCT_ITEMS,
    MAX_QUANTITY,
    OrderStatus,
    ensure_distinct,
)
from mercato.platform.schemas import Integral, StrictModel, Text

if TYPE_CHECKING:
    from sqlalchemy import Row

    from mercato.orders.models import OrderRow

#: Money on the wire: a decimal string with two places ("19.99").
MoneyStr = Annotated[Decimal, PlainSerializer(lambda v: f"{v:.2f}", return_type=str)]


class OrderItemIn(StrictModel):
    product_id: Text = Field(min_length=1, max_length=64)
    quantity: Annotated[int, Field(ge=1, le=MAX_QUANTITY), Integral]


class PlaceOrder(StrictModel):
    """``POST /orders``: 1 to 50 distinct products, each 1 to 100 units."""

    items: list[OrderItemIn] = Field(min_length=1, max_length=MAX_DISTINCT_ITEMS)
    shipping_address: Text | None = Field(None, min_length=1, max_length=1000)

    @field_validator("items")
    @classmethod
    def _distinct_products(cls, items: list[OrderItemIn]) -> list[OrderItemIn]:
        ensure_distinct([item.product_id for item in items])  # InvalidOrder is a ValueError: 422
        return items


class OrderLineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    product_id: str
    name: str
    quantity: int
    unit_price: MoneyStr
    line_total: MoneyStr


class OrderOut(BaseModel):
    id: str
    user_id: str
    status: OrderStatus
    reason: str | None = Field(None, description="why the order was rejected")
    items: list[OrderLineOut]
    total: MoneyStr
    currency: str
    shipping_address: str | None = None
    created_at: datetime
    updated_at: datetime


class OrderPage(BaseModel):
    items: list[OrderOut]
    total: int
    limit: int
    offset: int


def _order_fields(order: Any, lines: Iterable[Any]) -> dict[str, Any]:
    """:class:`OrderOut`'s fields of ``order`` and its ``lines``: ORM rows, or the columns
    that ``OrderRepository.view`` reads (the same names)."""
    return {
        "id": order.id,
        "user_id": order.user_id,
        "status": order.status,
        "reason": order.reason,
        "items": [
            {
                "product_id": line.product_id,
                "name": line.name,
                "quantity": line.quantity,
                "unit_price": line.unit_price,
                "line_total": (line.unit_price * line.quantity).quantize(CENT),
            }
            for line in lines
        ],
        "total": order.total,
        "currency": order.currency,
        "shipping_address": order.shipping_address,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
    }


def order_out(row: OrderRow, **changes: Any) -> OrderOut:
    """The API's view of an order row (``changes`` override its fields: a status just set)."""
    return OrderOut.model_validate({**_order_fields(row, row.lines), **changes})


def order_view_out(rows: Sequence[Row[Any]]) -> OrderOut:
    """The API's view of an order read as columns (``OrderRepository.view``: the order's
    columns on each of its lines' rows); validated once, lines included."""
    # The outer join's one row of an order without lines has no product.
    lines = (row for row in rows if row.product_id is not None)
    return OrderOut.model_validate(_order_fields(rows[0], lines))
