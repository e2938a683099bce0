"""Each rule a request body enforces is the one its JSON schema states: a value valid by
the schema is taken, one invalid by it refused (what schema fuzzing checks end to end)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import Field, TypeAdapter, ValidationError

from mercato.auth.domain import PASSWORD_PATTERN, USERNAME_PATTERN, password_problem
from mercato.auth.schemas import RegisterRequest
from mercato.platform.schemas import TRIMMED, Integral, StrictModel, Trimmed
from mercato.products.domain import MAX_PRICE
from mercato.products.schemas import IDS_TEXT, PRICE_TEXT, ProductCreate, product_ids

ANY_TEXT = st.text(st.characters(codec="utf-8"), max_size=30)


class Counted(StrictModel):
    count: Annotated[int, Field(ge=0, le=10), Integral]


def matches(pattern: str, text: str) -> bool:
    """Whether ``text`` matches a schema ``pattern`` as JSON Schema reads it (ECMA-262),
    where ``$`` ends the text; Python's ``$`` also matches before a final line break."""
    return re.search(re.sub(r"\$$", r"\\Z", pattern), text) is not None


def accepts(adapter: TypeAdapter[Any], value: object) -> bool:
    try:
        adapter.validate_python(value)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize(
    ("value", "taken"),
    [(3, True), (3.0, True), (2.5, False), (True, False), ("3", False), (11.0, False)],
)
def test_an_integer_is_a_json_integer_never_a_boolean_or_text(value: object, taken: bool) -> None:
    assert accepts(TypeAdapter(Counted), {"count": value}) is taken


def test_an_integer_keeps_its_bounds_in_the_schema() -> None:
    count = Counted.model_json_schema()["properties"]["count"]
    assert (count["type"], count["minimum"], count["maximum"]) == ("integer", 0, 10)


@given(ANY_TEXT)
def test_trimmed_text_is_what_its_pattern_says(text: str) -> None:
    assert accepts(TypeAdapter(Trimmed), text) is matches(TRIMMED, text)


@given(st.one_of(ANY_TEXT, st.from_regex(PRICE_TEXT, fullmatch=True)))
def test_a_price_is_taken_exactly_when_its_pattern_matches(text: str) -> None:
    body = {"sku": "A", "name": "Lamp", "price": text}
    schema = ProductCreate.model_json_schema()["properties"]["price"]["pattern"]
    taken = accepts(TypeAdapter(ProductCreate), body)
    assert taken is matches(schema, text)
    if taken:
        assert Decimal(0) < Decimal(text) <= MAX_PRICE


@pytest.mark.parametrize(
    "text", ["0", "0.00", "", "01.5", "1.234", "1e3", "-1", " 1", "10000000000"]
)
def test_prices_the_schema_refuses_are_refused(text: str) -> None:
    assert not accepts(TypeAdapter(ProductCreate), {"sku": "A", "name": "Lamp", "price": text})


@given(st.one_of(ANY_TEXT, st.from_regex(r"[A-Za-z0-9]{2,12}", fullmatch=True)))
def test_a_username_is_taken_exactly_when_its_pattern_matches(username: str) -> None:
    body = {"username": username, "email": "a@example.com", "password": "Lamp-Post-42"}
    valid = matches(USERNAME_PATTERN, username)
    assert accepts(TypeAdapter(RegisterRequest), body) is valid


@given(st.one_of(ANY_TEXT, st.from_regex(PASSWORD_PATTERN, fullmatch=True)))
def test_the_password_rule_is_its_pattern_and_its_length(password: str) -> None:
    body = {"username": "abc", "email": "a@example.com", "password": password}
    by_schema = matches(PASSWORD_PATTERN, password) and 8 <= len(password) <= 128
    # The list of common passwords is the one part of the rule no schema can carry.
    common = "common" in (password_problem(password) or "")
    assert accepts(TypeAdapter(RegisterRequest), body) is (by_schema and not common)


def test_special_use_e_mail_domains_are_refused_as_the_schema_says() -> None:
    not_pattern = RegisterRequest.model_json_schema()["properties"]["email"]["not"]["pattern"]
    for address in ("a@shop.test", "a@host.LOCAL", "a@localhost"):
        assert matches(not_pattern, address)
        body = {"username": "abc", "email": address, "password": "Lamp-Post-42"}
        assert not accepts(TypeAdapter(RegisterRequest), body)
    assert not matches(not_pattern, "a@example.com")


@given(st.one_of(ANY_TEXT, st.from_regex(IDS_TEXT, fullmatch=True)))
def test_an_ids_list_is_taken_exactly_when_its_pattern_matches(text: str) -> None:
    try:
        product_ids(text)
    except ValueError:
        taken = False
    else:
        taken = True
    assert taken is matches(IDS_TEXT, text)
