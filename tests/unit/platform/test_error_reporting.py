"""What an error report may carry: no secrets, no personal data (``scrub``, ``before_send``)."""

from __future__ import annotations

from typing import Any

from mercato.platform.error_reporting import before_send, scrub
from mercato.platform.logging import REDACTED
from mercato.platform.settings_sources import MASK, masked_value


def test_secrets_and_personal_data_are_withheld_at_any_depth() -> None:
    event = {
        "request": {
            "headers": {"Authorization": "Bearer abc", "X-Api-Key": "k", "Accept": "*/*"},
            "data": {"user": {"password": "p", "Email": "a@b.co", "username": "ann"}},
        },
        "extra": {"pairs": [("cookie", "session=1"), ("accept", "json")]},
        "server_name": "host-1",
        "tags": {"request_id": "r1"},
    }
    scrubbed = scrub(event)
    assert scrubbed["request"]["headers"] == {
        "Authorization": REDACTED,
        "X-Api-Key": REDACTED,
        "Accept": "*/*",
    }
    assert scrubbed["request"]["data"]["user"] == {
        "password": REDACTED,
        "Email": REDACTED,
        "username": REDACTED,
    }
    assert scrubbed["extra"]["pairs"] == [("cookie", REDACTED), ("accept", "json")]
    # Personal keys are whole names: a host name is not a name.
    assert scrubbed["server_name"] == "host-1"
    assert scrubbed["tags"] == {"request_id": "r1"}
    assert event["request"]["headers"]["Authorization"] == "Bearer abc"  # a copy


def test_email_addresses_are_removed_from_any_text() -> None:
    message = "card declined for alice.smith+shop@mail.example.co.uk, see bob@example.org"
    assert scrub({"value": message}) == {"value": "card declined for [email], see [email]"}
    assert scrub({"release": "mercato@0.1.0"}) == {"release": "mercato@0.1.0"}


def test_sensitive_query_parameters_are_withheld() -> None:
    event: Any = {"request": {"query_string": "page=2&access_token=abc&email=a%40b.co"}}
    query = before_send(event, {})["request"]["query_string"]
    assert "abc" not in query
    assert "a%40b.co" not in query
    assert query.startswith("page=2&")


def test_an_absurd_depth_ends_in_a_placeholder() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(100):
        node["next"] = {}
        node = node["next"]
    assert "[TOO DEEP]" in str(scrub(deep))


def test_the_dsn_is_shown_masked() -> None:
    assert masked_value("sentry_dsn", "https://key@sentry.example.com/1") == MASK
