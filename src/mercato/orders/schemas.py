"""Request and response bodies of the orders API (API.md, "Orders service")."""

from __future__ import annotations

from collections.abc import Sequence
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


def order_out(row: OrderRow, **changes: Any) -> OrderOut:
    """The API's view of an order row (``changes`` override its fields: a status just set)."""
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


def order_view_out(rows: Sequence[Row[Any]]) -> OrderOut:
    """The API's view of an order read as columns (``OrderRepository.view``: the order's
    columns on each of its lines' rows); validated once, lines included."""
    first = rows[0]
    return OrderOut.model_validate(
        {
            "id": first.id,
            "user_id": first.user_id,
            "status": first.status,
            "reason": first.reason,
            "items": [
                {
                    "product_id": row.product_id,
                    "name": row.name,
                    "quantity": row.quantity,
                    "unit_price": row.unit_price,
                    "line_total": (row.unit_price * row.quantity).quantize(CENT),
                }
                for row in rows
                if row.product_id is not None  # the outer join's row of an order without lines
            ],
            "total": first.total,
            "currency": first.currency,
            "shipping_address": first.shipping_address,
            "created_at": first.created_at,
            "updated_at": first.updated_at,
        }
    )
