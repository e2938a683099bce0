"""User enumeration, the password policy and password storage (OWASP API2 of 2023)."""

from __future__ import annotations

import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.processes import RunningMercato
from support.security_api import API, Account, Seen, registration, unique_name

TRIES = 50
#: The largest difference of the medians that reveals nothing a network's jitter hides.
MAX_MEDIAN_GAP = 0.010


def without_request_id(answer: httpx.Response) -> tuple[int, Any]:
    body = answer.json() if answer.content else None
    if isinstance(body, dict):
        body.pop("request_id", None)
    return answer.status_code, body


def timed(http: httpx.Client, path: str, body: dict[str, str]) -> tuple[float, tuple[int, Any]]:
    start = time.perf_counter()
    answer = http.post(f"{API}{path}", json=body)
    return time.perf_counter() - start, without_request_id(answer)


def compare(
    http: httpx.Client, path: str, known: dict[str, str], unknown: dict[str, str]
) -> tuple[float, set[Any], set[Any]]:
    """Interleaved tries of both, so drift in the machine's load hits both alike; answers
    the gap of the medians and the distinct answers of each."""
    known_times, unknown_times = [], []
    known_answers, unknown_answers = set(), set()
    timed(http, path, known)  # warm both paths (connection, caches)
    timed(http, path, unknown)
    for _ in range(TRIES):
        elapsed, answer = timed(http, path, known)
        known_times.append(elapsed)
        known_answers.add(repr(answer))
        elapsed, answer = timed(http, path, unknown)
        unknown_times.append(elapsed)
        unknown_answers.add(repr(answer))
    gap = abs(statistics.median(known_times) - statistics.median(unknown_times))
    return gap, known_answers, unknown_answers


def test_login_does_not_tell_an_unknown_user_from_a_wrong_password(
    http: httpx.Client, customer: Account
) -> None:
    wrong = {"username": customer.username, "password": "Wrong1Password"}
    unknown = {"username": unique_name(), "password": "Wrong1Password"}
    gap, wrong_answers, unknown_answers = compare(http, "/auth/login", wrong, unknown)
    assert wrong_answers == unknown_answers
    assert len(wrong_answers) == 1
    assert gap < MAX_MEDIAN_GAP, f"medians {gap * 1000:.1f} ms apart"


def test_password_forgot_does_not_tell_a_known_address_from_an_unknown_one(
    http: httpx.Client, customer: Account
) -> None:
    known = {"email": f"{customer.username}@example.com"}
    unknown = {"email": f"{unique_name()}@example.com"}
    gap, known_answers, unknown_answers = compare(http, "/auth/password/forgot", known, unknown)
    assert known_answers == unknown_answers
    assert gap < MAX_MEDIAN_GAP, f"medians {gap * 1000:.1f} ms apart"


WEAK = {
    "too-short": "Abcde12",
    "no-upper-case": "abcdefg12",
    "no-digit": "Abcdefghij",
    "too-long": "A1" + "b" * 127,
    "blank": "        ",
}


@pytest.mark.parametrize("password", WEAK.values(), ids=WEAK.keys())
def test_each_password_rule_is_refused_with_422(
    http: httpx.Client, customer: Account, password: str, secrets_seen: Seen
) -> None:
    secrets_seen.add(password.strip() and password)
    body = registration(password=password)
    refused = http.post(f"{API}/auth/register", json=body)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    login = {"username": body["username"], "password": password}
    assert http.post(f"{API}/auth/login", json=login).status_code in {401, 422}
    change = {"current_password": customer.password, "new_password": password}
    answer = http.post(f"{API}/auth/password/change", json=change, headers=customer.headers)
    assert answer.status_code == 422, answer.text
    still = {"username": customer.username, "password": customer.password}
    assert http.post(f"{API}/auth/login", json=still).status_code == 200


def test_passwords_are_stored_as_argon2id_hashes(
    mercato: RunningMercato, customer: Account
) -> None:
    database = Path(mercato.data_dir) / "auth.db"
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        rows = connection.execute("SELECT username, password_hash FROM users").fetchall()
    hashes = dict(rows)
    assert hashes[customer.username].startswith("$argon2id$")
    assert all(value.startswith("$argon2id$") for value in hashes.values())
    assert not any(customer.password in value for value in hashes.values())
    assert len(set(hashes.values())) == len(hashes)  # salted: one password, many hashes
