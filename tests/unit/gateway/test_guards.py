"""Reading the bearer token, and the security headers list."""

from __future__ import annotations

import pytest

from mercato.gateway.guards import bearer_token
from mercato.gateway.middleware import security_headers
from mercato.settings import load_settings


@pytest.mark.parametrize(
    ("value", "token"),
    [
        (b"Bearer abc.def.ghi", "abc.def.ghi"),
        (b"bearer  abc", "abc"),
        (b"BEARER abc", "abc"),
        (b"Basic dXNlcjpwdw==", None),
        (b"Bearerabc", None),
    ],
)
def test_bearer_token(value: bytes, token: str | None) -> None:
    assert bearer_token({"headers": [(b"authorization", value)]}) == token


def test_no_authorization_header_means_no_token() -> None:
    assert bearer_token({"headers": [(b"accept", b"*/*")]}) is None


def test_security_headers_follow_settings() -> None:
    settings = load_settings(env_file=None, environment="testing", referrer_policy="no-referrer")
    headers = dict(security_headers(settings))
    assert headers[b"referrer-policy"] == b"no-referrer"
    assert headers[b"x-frame-options"] == b"DENY"
