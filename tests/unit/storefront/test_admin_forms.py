"""How the admin's product form becomes an API body: the API's types are strict, so the
form's text is converted here, and what cannot be is the field's error."""

from __future__ import annotations

import pytest

from mercato.storefront.admin import FIELDS, api_body

FORM = {
    "sku": " LAMP-1 ",
    "name": "Desk lamp",
    "price": "19.90",
    "stock": "3",
    "category": "",
    "currency": "",
    "description": "  Brass.\n",
}


def test_stock_is_sent_as_an_integer_and_the_rest_as_text() -> None:
    body, errors = api_body(FORM, list(FIELDS))

    assert errors == {}
    assert body["stock"] == 3
    assert body["price"] == "19.90"  # the API parses the decimal text itself
    assert body["sku"] == "LAMP-1"
    assert body["description"] == "  Brass.\n"  # kept as typed


def test_only_the_named_fields_are_sent() -> None:
    body, errors = api_body(FORM, ["price"])

    assert (body, errors) == ({"price": "19.90"}, {})


@pytest.mark.parametrize("stock", ["", "two", "1.5", "1e3", "1_000", "\u0663", "9" * 13])
def test_a_stock_that_is_not_a_whole_number_is_the_fields_error(stock: str) -> None:
    body, errors = api_body({**FORM, "stock": stock}, list(FIELDS))

    assert "stock" not in body
    assert errors == {"stock": "Enter a whole number, 0 or more."}


@pytest.mark.parametrize(("stock", "sent"), [(" 7 ", 7), ("0", 0), ("-1", -1)])
def test_a_whole_number_is_sent_for_the_api_to_judge(stock: str, sent: int) -> None:
    body, _ = api_body({**FORM, "stock": stock}, ["stock"])

    assert body == {"stock": sent}  # -1 is the API's 422, shown next to the field
