"""How the account pages read a form's age and show the API's refusals next to the fields."""

from __future__ import annotations

from typing import Any

import pytest

from mercato.storefront.accounts import CHECK_FIELDS, NOT_A_NUMBER, Problems, age_of
from mercato.storefront.api import ApiAnswer

SHOWN = ("username", "email", "password")


@pytest.mark.parametrize(
    ("value", "age"), [("", None), ("0", 0), ("42", 42), ("-1", -1), ("99999", 99999)]
)
def test_an_age_is_an_integer_or_none(value: str, age: int | None) -> None:
    assert age_of(value) == age


@pytest.mark.parametrize(
    "value", ["forty", "4 2", "4.5", "1e3", "1234567890", "\u0664\u0662", "+4"]
)
def test_an_age_that_is_no_whole_number_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match=NOT_A_NUMBER):
        age_of(value)


def validation(*errors: tuple[list[Any], str]) -> ApiAnswer:
    body = {"status": 422, "errors": [{"loc": loc, "msg": msg} for loc, msg in errors]}
    return ApiAnswer(422, body)


def test_a_422_puts_each_error_next_to_its_field() -> None:
    answer = validation(
        (["body", "password"], "Value error, password needs a digit"),
        (["body", "username"], "String should have at least 3 characters"),
    )

    problems = Problems.of(answer, SHOWN)

    assert problems.fields == {
        "password": "Password needs a digit",
        "username": "Must have at least 3 characters",
    }
    assert (problems.alert, problems.status) == (CHECK_FIELDS, 422)


def test_an_error_of_no_field_on_the_form_goes_in_the_summary() -> None:
    answer = validation((["body", "roles"], "Extra inputs are not permitted"))

    problems = Problems.of(answer, SHOWN)

    assert problems.fields == {}
    assert problems.alert == "Extra inputs are not permitted"


def test_a_conflict_is_shown_next_to_the_field_it_names() -> None:
    taken = "This e-mail address is already registered."

    problems = Problems.of(ApiAnswer(409, {"detail": taken, "field": "email"}), SHOWN)

    assert problems.fields == {"email": taken}
    assert (problems.alert, problems.status) == (taken, 409)


def test_a_conflict_naming_no_field_of_the_form_is_only_the_summary() -> None:
    answer = ApiAnswer(409, {"detail": "Already registered.", "field": "roles"})

    assert Problems.of(answer, SHOWN).fields == {}


def test_a_429_keeps_its_retry_after() -> None:
    problems = Problems.of(ApiAnswer(429, {"detail": "slow down"}, {"Retry-After": "42"}), SHOWN)

    assert (problems.status, problems.headers) == (429, {"Retry-After": "42"})
    assert problems.alert
