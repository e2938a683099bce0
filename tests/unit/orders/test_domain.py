"""The order's rules: lifecycle transitions, pricing, request fingerprints."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mercato.orders.domain import (
    InvalidOrder,
    InvalidTransition,
    OrderStatus,
    PricedProduct,
    allowed_from,
    can_transition,
    next_status,
    price_order,
    request_fingerprint,
)

P, C, R, X = (
    OrderStatus.PENDING,
    OrderStatus.CONFIRMED,
    OrderStatus.REJECTED,
    OrderStatus.CANCELLED,
)

#: How far along its life each state is; no transition may lower it.
RANK = {P: 0, C: 1, R: 2, X: 2}


@pytest.mark.parametrize(
    ("current", "wanted"),
    [(P, C), (P, R), (P, X), (C, X)],
)
def test_the_saga_moves_are_allowed(current: OrderStatus, wanted: OrderStatus) -> None:
    assert next_status(current, wanted) is wanted


@pytest.mark.parametrize(
    ("current", "wanted"),
    [(C, P), (C, R), (R, P), (R, C), (R, X), (X, P), (X, C), (X, R), (P, P), (C, C)],
)
def test_every_other_move_is_refused(current: OrderStatus, wanted: OrderStatus) -> None:
    with pytest.raises(InvalidTransition):
        next_status(current, wanted)


@given(st.lists(st.sampled_from(list(OrderStatus)), max_size=20))
def test_no_sequence_of_events_moves_an_order_backwards(attempts: list[OrderStatus]) -> None:
    status = P
    for wanted in attempts:
        if can_transition(status, wanted):
            assert RANK[wanted] > RANK[status]
            status = wanted


def test_only_pending_and_confirmed_orders_can_be_cancelled() -> None:
    assert allowed_from(X) == frozenset({P, C})
    for final in (R, X):
        with pytest.raises(InvalidTransition, match=f"that is {final} cannot become cancelled"):
            next_status(final, X)


def test_only_a_pending_order_can_be_settled_by_the_saga() -> None:
    assert allowed_from(C) == frozenset({P})
    assert allowed_from(R) == frozenset({P})
    assert allowed_from(P) == frozenset()


def _product(pid: str, price: str, currency: str = "USD") -> PricedProduct:
    return PricedProduct(pid, f"name {pid}", Decimal(price), currency)


def test_prices_are_snapshotted_onto_lines_and_totalled() -> None:
    products = {"a": _product("a", "19.99"), "b": _product("b", "0.10")}
    order = price_order([("a", 3), ("b", 7)], products)
    assert [line.line_total for line in order.lines] == [Decimal("59.97"), Decimal("0.70")]
    assert order.total == Decimal("60.67")
    assert order.currency == "USD"
    assert order.lines[0].name == "name a"


@pytest.mark.parametrize(
    ("requested", "message"),
    [
        ([], "1 to 50"),
        ([("a", 1), ("a", 2)], "more than one line"),
        ([("a", 0)], "quantity"),
        ([("a", 101)], "quantity"),
        ([("a", 1), ("e", 1)], "same currency"),
    ],
)
def test_bad_orders_are_refused(requested: list[tuple[str, int]], message: str) -> None:
    products = {"a": _product("a", "1.00"), "e": _product("e", "1.00", "EUR")}
    with pytest.raises(InvalidOrder, match=message):
        price_order(requested, products)


def test_at_most_fifty_distinct_items() -> None:
    products = {str(i): _product(str(i), "1.00") for i in range(51)}
    assert len(price_order([(str(i), 1) for i in range(50)], products).lines) == 50
    with pytest.raises(InvalidOrder):
        price_order([(str(i), 1) for i in range(51)], products)


def test_fingerprint_ignores_key_order_but_not_values() -> None:
    one = request_fingerprint({"items": [{"product_id": "a", "quantity": 1}], "x": None})
    same = request_fingerprint({"x": None, "items": [{"quantity": 1, "product_id": "a"}]})
    other = request_fingerprint({"items": [{"product_id": "a", "quantity": 2}], "x": None})
    assert one == same
    assert one != other
