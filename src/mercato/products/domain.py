"""The products context's rules, in plain Python: money, the search text, the sort
allow-list and the all-or-nothing reservation of an order's lines."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

#: Two decimal places: every price is stored and shown this way.
CENT: Final = Decimal("0.01")
MAX_PRICE: Final = Decimal("9999999999.99")  # what Numeric(12, 2) holds
DEFAULT_CATEGORY: Final = "general"
DEFAULT_CURRENCY: Final = "USD"
LIKE_ESCAPE: Final = "\\"


class ProductSort(enum.StrEnum):
    """The only orders a list can be sorted in (API.md); anything else is a 422."""

    NAME = "name"
    PRICE = "price"
    PRICE_DESC = "-price"
    CREATED_AT = "created_at"
    CREATED_AT_DESC = "-created_at"

    @property
    def field(self) -> str:
        return self.value.removeprefix("-")

    @property
    def descending(self) -> bool:
        return self.value.startswith("-")


def to_money(value: Decimal) -> Decimal:
    """``value`` with exactly two decimal places; refuses what would need rounding."""
    if not value.is_finite():
        raise ValueError("a price must be a finite number")
    quantized = value.quantize(CENT)
    if quantized != value:
        raise ValueError("a price has at most two decimal places")
    return quantized


def contains_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` literally anywhere: ``%``, ``_`` and the escape
    character in user input are escaped (use with ``escape=LIKE_ESCAPE``)."""
    escaped = (
        text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
        .replace("%", LIKE_ESCAPE + "%")
        .replace("_", LIKE_ESCAPE + "_")
    )
    return f"%{escaped}%"


@dataclass(frozen=True, slots=True)
class Line:
    product_id: str
    quantity: int


@dataclass(frozen=True, slots=True)
class Shortfall:
    product_id: str
    requested: int
    available: int


def merge_lines(lines: Iterable[Line]) -> list[Line]:
    """One line per product (quantities summed), in product id order.

    Updating rows in one global order is what keeps two concurrent reservations from
    deadlocking on PostgreSQL; merging makes ``stock >= quantity`` hold for the whole ask.
    """
    totals: dict[str, int] = {}
    for line in lines:
        if line.quantity < 1:
            raise ValueError(f"quantity must be positive, got {line.quantity}")
        totals[line.product_id] = totals.get(line.product_id, 0) + line.quantity
    return [Line(product_id, totals[product_id]) for product_id in sorted(totals)]


def shortfalls(lines: Iterable[Line], available: Mapping[str, int]) -> list[Shortfall]:
    """The lines that ``available`` stock cannot cover (an unknown product has none)."""
    return [
        Shortfall(line.product_id, line.quantity, available.get(line.product_id, 0))
        for line in lines
        if available.get(line.product_id, 0) < line.quantity
    ]


class ReservationStatus(enum.StrEnum):
    """What products did with one order's stock; exactly one row per order id."""

    RESERVED = "reserved"  # stock taken; a cancellation gives it back
    REJECTED = "rejected"  # nothing taken
    RELEASED = "released"  # taken, then given back after cancellation
    CANCELLED = "cancelled"  # cancelled before it was placed here: never reserve it
