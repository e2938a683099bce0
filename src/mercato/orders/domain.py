"""The rules of an order, in plain Python: its lines and totals, and its lifecycle.

An order is born ``pending``. Products answers its ``order.placed`` with ``stock.reserved``
(-> ``confirmed``) or ``stock.rejected`` (-> ``rejected``, with a reason). Its owner (or an
admin) may cancel it while ``pending`` or ``confirmed``. No transition ever leads back:
``rejected`` and ``cancelled`` are final, and ``confirmed`` only leads to ``cancelled``. So a
late or repeated event finds the order past the state it expects and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

MAX_QUANTITY: Final = 100
MAX_DISTINCT_ITEMS: Final = 50
CENT: Final = Decimal("0.01")


class OrderStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


#: Every move an order may make; anything else is refused. The service's compare-and-set
#: status changes take their ``from`` statuses from here (:func:`allowed_from`).
TRANSITIONS: Final[Mapping[OrderStatus, frozenset[OrderStatus]]] = {
    OrderStatus.PENDING: frozenset(
        {OrderStatus.CONFIRMED, OrderStatus.REJECTED, OrderStatus.CANCELLED}
    ),
    OrderStatus.CONFIRMED: frozenset({OrderStatus.CANCELLED}),
    OrderStatus.REJECTED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}


class OrderError(Exception):
    """A rule of this context was broken; the service maps it to an HTTP answer."""


class InvalidTransition(OrderError):
    def __init__(self, current: OrderStatus, wanted: OrderStatus) -> None:
        super().__init__(f"an order that is {current.value} cannot become {wanted.value}")
        self.current = current
        self.wanted = wanted


class InvalidOrder(OrderError, ValueError):
    """The order's lines break a rule (duplicate products, mixed currencies...)."""


def can_transition(current: OrderStatus, wanted: OrderStatus) -> bool:
    return wanted in TRANSITIONS[current]


def next_status(current: OrderStatus, wanted: OrderStatus) -> OrderStatus:
    """``wanted`` if the order may move there from ``current``; else :class:`InvalidTransition`."""
    if not can_transition(current, wanted):
        raise InvalidTransition(current, wanted)
    return wanted


def allowed_from(wanted: OrderStatus) -> frozenset[OrderStatus]:
    """Every status an order may move to ``wanted`` from: what a compare-and-set status
    change requires the stored status to still be."""
    return frozenset(current for current, moves in TRANSITIONS.items() if wanted in moves)


@dataclass(frozen=True, slots=True)
class PricedProduct:
    """What the order needs of a product, as the products service answered at placing."""

    product_id: str
    name: str
    price: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class Line:
    product_id: str
    name: str
    quantity: int
    unit_price: Decimal

    @property
    def line_total(self) -> Decimal:
        return (self.unit_price * self.quantity).quantize(CENT)


@dataclass(frozen=True, slots=True)
class PricedOrder:
    lines: tuple[Line, ...]
    currency: str

    @property
    def total(self) -> Decimal:
        return sum((line.line_total for line in self.lines), Decimal("0")).quantize(CENT)


def ensure_distinct(product_ids: Sequence[str]) -> None:
    """Each product appears on one line only."""
    seen: set[str] = set()
    for product_id in product_ids:
        if product_id in seen:
            raise InvalidOrder(f"product {product_id} appears on more than one line")
        seen.add(product_id)


def price_order(
    requested: Sequence[tuple[str, int]], products: Mapping[str, PricedProduct]
) -> PricedOrder:
    """Snapshot prices onto the lines ``(product_id, quantity)``; all in one currency."""
    if not 1 <= len(requested) <= MAX_DISTINCT_ITEMS:
        raise InvalidOrder(f"an order has 1 to {MAX_DISTINCT_ITEMS} distinct items")
    ensure_distinct([product_id for product_id, _ in requested])
    lines: list[Line] = []
    currencies: set[str] = set()
    for product_id, quantity in requested:
        if not 1 <= quantity <= MAX_QUANTITY:
            raise InvalidOrder(f"quantity must be 1 to {MAX_QUANTITY}")
        product = products[product_id]
        currencies.add(product.currency)
        lines.append(Line(product_id, product.name, quantity, product.price.quantize(CENT)))
    if len(currencies) != 1:
        raise InvalidOrder("every product of one order must be priced in the same currency")
    return PricedOrder(tuple(lines), currencies.pop())


def request_fingerprint(payload: Mapping[str, Any]) -> str:
    """A stable digest of a request body: the same data in any key order or spacing gives
    the same fingerprint, any other data another one."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
