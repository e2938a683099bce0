"""The products context's plain rules: money, literal search patterns, lines, the demo data."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mercato.products.demo import demo_catalogue
from mercato.products.domain import (
    LIKE_ESCAPE,
    Line,
    ProductSort,
    Shortfall,
    contains_pattern,
    merge_lines,
    shortfalls,
    to_money,
)


def like_matches(pattern: str, text: str) -> bool:
    """SQL LIKE with ``LIKE_ESCAPE``, evaluated in Python, to check the pattern's meaning."""
    regex, chars = "", iter(pattern)
    for char in chars:
        if char == LIKE_ESCAPE:
            regex += re.escape(next(chars))
        elif char == "%":
            regex += ".*"
        elif char == "_":
            regex += "."
        else:
            regex += re.escape(char)
    return re.fullmatch(regex, text, re.DOTALL) is not None


@pytest.mark.parametrize(
    ("text", "inside", "outside"),
    [
        ("100%", "a 100% cotton shirt", "a 1000 cotton shirt"),
        ("a_b", "xa_by", "xacby"),
        ("back\\slash", "a back\\slash here", "a backslash here"),
        ("%", "50% off", "fifty off"),
    ],
)
def test_a_search_pattern_matches_its_text_literally(text: str, inside: str, outside: str) -> None:
    pattern = contains_pattern(text)
    assert like_matches(pattern, inside)
    assert not like_matches(pattern, outside)


@given(st.text(min_size=1, max_size=20), st.text(max_size=10), st.text(max_size=10))
def test_any_text_is_found_exactly_where_it_occurs(text: str, before: str, after: str) -> None:
    pattern = contains_pattern(text)
    assert like_matches(pattern, before + text + after)
    assert like_matches(pattern, before + after) == (text in before + after)


def test_money_keeps_two_places_and_refuses_rounding() -> None:
    assert str(to_money(Decimal("19.9"))) == "19.90"
    assert str(to_money(Decimal(7))) == "7.00"
    with pytest.raises(ValueError, match="two decimal places"):
        to_money(Decimal("19.999"))
    with pytest.raises(ValueError, match="finite"):
        to_money(Decimal("NaN"))


def test_sort_allow_list_names_field_and_direction() -> None:
    assert [(s.field, s.descending) for s in ProductSort] == [
        ("name", False),
        ("price", False),
        ("price", True),
        ("created_at", False),
        ("created_at", True),
    ]
    with pytest.raises(ValueError, match="not a valid"):
        ProductSort("price; DROP TABLE products")


def test_lines_are_merged_per_product_in_id_order() -> None:
    merged = merge_lines([Line("b", 2), Line("a", 1), Line("b", 3)])
    assert merged == [Line("a", 1), Line("b", 5)]
    with pytest.raises(ValueError, match="positive"):
        merge_lines([Line("a", 0)])


def test_shortfalls_name_every_line_the_stock_cannot_cover() -> None:
    lines = [Line("a", 2), Line("b", 5), Line("c", 1)]
    assert shortfalls(lines, {"a": 2, "b": 4}) == [Shortfall("b", 5, 4), Shortfall("c", 1, 0)]
    assert shortfalls(lines, {"a": 9, "b": 9, "c": 9}) == []


def test_the_demo_catalogue_is_large_varied_and_stable() -> None:
    catalogue = demo_catalogue()
    assert len(catalogue) >= 100
    assert len({product.sku for product in catalogue}) == len(catalogue)
    assert len({product.category for product in catalogue}) >= 5
    assert all(product.description and product.price > 0 for product in catalogue)
    assert [p.model_dump() for p in demo_catalogue()] == [p.model_dump() for p in catalogue]
