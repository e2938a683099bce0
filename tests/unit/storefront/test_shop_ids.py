"""Which ids from a page's path may go into an API path (storefront.shop.is_id)."""

from __future__ import annotations

import pytest

from mercato.storefront.shop import MAX_ID_LENGTH, is_id


@pytest.mark.parametrize(
    "value",
    ["3f2b8c1e-0d4a-4c6e-9b1a-2f3e4d5c6b7a", "a", "x" * MAX_ID_LENGTH],
)
def test_an_id_the_services_could_store_is_one(value: str) -> None:
    assert is_id(value)


@pytest.mark.parametrize(
    "value",
    ["", ".", "..", "x" * (MAX_ID_LENGTH + 1), "a\x00b", "a\nb", "\u202eab"],
    ids=["empty", "dot", "dot-dot", "too-long", "nul", "newline", "bidi-override"],
)
def test_anything_else_is_not(value: str) -> None:
    assert not is_id(value)
