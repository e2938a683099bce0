"""The username and password rules, with property tests."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from mercato.auth import domain
from mercato.auth.schemas import RegisterRequest

ALNUM = string.ascii_letters + string.digits


@given(st.text(alphabet=ALNUM, min_size=3, max_size=50))
def test_every_ascii_alphanumeric_username_of_3_to_50_is_accepted(username: str) -> None:
    assert domain.username_problem(username) is None


@given(st.text(alphabet=ALNUM, max_size=2) | st.text(alphabet=ALNUM, min_size=51, max_size=80))
def test_usernames_too_short_or_too_long_are_refused(username: str) -> None:
    assert domain.username_problem(username) is not None


@given(
    st.text(alphabet=ALNUM, min_size=1, max_size=20),
    st.characters(exclude_characters=ALNUM),
    st.text(alphabet=ALNUM, min_size=2, max_size=20),
)
def test_a_username_with_any_other_character_is_refused(head: str, bad: str, tail: str) -> None:
    assert domain.username_problem(head + bad + tail) is not None


@given(st.text(alphabet=ALNUM, min_size=3, max_size=50))
def test_usernames_differing_only_in_case_share_one_key(username: str) -> None:
    assert domain.username_key(username.upper()) == domain.username_key(username.lower())


strong_passwords = st.builds(
    lambda body, upper, digit: body + upper + digit,
    st.text(alphabet=string.ascii_lowercase + string.punctuation, min_size=6, max_size=126),
    st.sampled_from(string.ascii_uppercase),
    st.sampled_from(string.digits),
).filter(lambda password: password.lower() not in domain.common_passwords())


@given(strong_passwords)
def test_passwords_meeting_every_rule_are_accepted(password: str) -> None:
    assert domain.password_problem(password) is None


@given(st.text(min_size=0, max_size=7))
def test_passwords_under_8_characters_are_refused(password: str) -> None:
    assert domain.password_problem(password) is not None


@given(st.text(min_size=129, max_size=300))
def test_passwords_over_128_characters_are_refused(password: str) -> None:
    assert domain.password_problem(password) is not None


@given(st.text(alphabet=string.ascii_lowercase + string.digits, min_size=8, max_size=64))
def test_passwords_without_an_upper_case_letter_are_refused(password: str) -> None:
    assert domain.password_problem(password) is not None


@given(st.text(alphabet=string.ascii_letters + string.punctuation, min_size=8, max_size=64))
def test_passwords_without_a_digit_are_refused(password: str) -> None:
    assert domain.password_problem(password) is not None


def test_the_bundled_list_holds_at_least_1000_common_passwords() -> None:
    common = domain.common_passwords()
    assert len(common) >= 1000
    assert {"123456", "password", "qwerty", "password1", "iloveyou"} <= common


@pytest.mark.parametrize(
    "password", ["Password1", "PASSWORD123", "Qwerty123", "Welcome1", "Iloveyou1"]
)
def test_common_passwords_are_refused_whatever_their_case(password: str) -> None:
    assert domain.password_problem(password) == "is too common; choose another"


def test_a_refresh_token_is_long_random_and_stored_hashed() -> None:
    tokens = {domain.new_refresh_token() for _ in range(100)}
    assert len(tokens) == 100
    token = tokens.pop()
    assert len(token) >= 43
    digest = domain.refresh_token_hash(token)
    assert token not in digest
    assert len(digest) == 64


@pytest.mark.parametrize(
    ("revoked", "used", "expires_in", "verdict"),
    [
        (False, False, 60, "ok"),
        (True, False, 60, "revoked"),
        (False, True, 60, "reused"),
        (False, False, -1, "expired"),
        (True, True, 60, "revoked"),
    ],
)
def test_refresh_verdicts(revoked: bool, used: bool, expires_in: int, verdict: str) -> None:
    now = datetime.now(UTC)
    state = domain.RefreshState(revoked, used, now + timedelta(seconds=expires_in))
    assert state.verdict(now) == verdict


@given(
    st.fixed_dictionaries(
        {
            "username": st.just("alice"),
            "email": st.just("a@example.com"),
            "password": strong_passwords,
        },
        optional={"age": st.integers(min_value=0, max_value=150)},
    )
)
def test_valid_registrations_parse(body: dict[str, object]) -> None:
    assert RegisterRequest.model_validate(body).model_dump(exclude_unset=True) == body


@given(st.integers().filter(lambda age: not 0 <= age <= 150))
def test_ages_outside_0_to_150_are_refused(age: int) -> None:
    with pytest.raises(ValidationError):
        RegisterRequest.model_validate(
            {
                "username": "alice",
                "email": "a@example.com",
                "password": "Zebra7Crossing",
                "age": age,
            }
        )
