"""SQLAlchemy tables of the products service."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

from mercato.platform.db import UtcDateTime, new_metadata
from mercato.products.domain import CENT


class Money(TypeDecorator[Decimal]):
    """``Numeric(12, 2)``, as ``Decimal`` both ways and never through a float.

    PostgreSQL stores and returns ``Decimal`` natively. SQLite has no decimal type (its
    driver hands back floats), so there the value is stored as whole cents, an integer,
    which still sorts and compares like the price.
    """

    impl = Numeric(12, 2)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Integer())
        return dialect.type_descriptor(Numeric(12, 2))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return int((value.quantize(CENT) * 100).to_integral_exact())
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return (Decimal(int(value)) / 100).quantize(CENT)
        return Decimal(value).quantize(CENT)


class Base(DeclarativeBase):
    metadata = new_metadata()


class ProductRow(Base):
    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("stock >= 0", name="stock_not_negative"),
        CheckConstraint("price > 0", name="price_positive"),
        Index("ix_products_category_price", "category", "price"),
        Index("ix_products_created_at", "created_at"),
        Index("ix_products_price", "price"),
        Index("ix_products_name", "name"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    price: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(3))
    category: Mapped[str] = mapped_column(String(64))
    stock: Mapped[int] = mapped_column(Integer)
    #: Bumped by every change, including stock moves: part of the HTTP validators.
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ReservationRow(Base):
    """What was done with one order's stock; the key that makes reserve/release exactly-once."""

    __tablename__ = "stock_reservations"

    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ReservationLineRow(Base):
    __tablename__ = "stock_reservation_lines"
    __table_args__ = (CheckConstraint("quantity > 0", name="quantity_positive"),)

    order_id: Mapped[str] = mapped_column(
        String(64),
        ForeignKey("stock_reservations.order_id", ondelete="CASCADE"),
        primary_key=True,
    )
    # No foreign key to products: a deleted product's reservation is still released cleanly.
    product_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    quantity: Mapped[int] = mapped_column(Integer)
