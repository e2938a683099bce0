"""The headers the gateway adds to an upstream's answer."""

from __future__ import annotations

from mercato.gateway.proxy import with_guard_headers


def limits(limit: int, remaining: int, reset: int) -> list[tuple[bytes, bytes]]:
    return [
        (b"ratelimit-limit", str(limit).encode()),
        (b"ratelimit-remaining", str(remaining).encode()),
        (b"ratelimit-reset", str(reset).encode()),
    ]


def test_an_answer_without_limits_of_its_own_gets_the_gateways() -> None:
    own = [(b"content-type", b"application/json")]
    assert with_guard_headers(own, limits(600, 599, 60)) == own + limits(600, 599, 60)


def test_one_set_of_ratelimit_headers_the_tighter_limits() -> None:
    """A login refused by the auth service's limit (0 left) keeps that limit's headers; a
    service limit looser than the gateway's gives way to the gateway's."""
    own = [(b"content-type", b"application/problem+json"), *limits(5, 0, 42)]
    assert with_guard_headers(own, limits(40, 9, 60)) == own
    loose = [(b"content-type", b"application/json"), *limits(100, 50, 60)]
    assert with_guard_headers(loose, limits(40, 9, 30)) == [
        (b"content-type", b"application/json"),
        *limits(40, 9, 30),
    ]


def test_no_guard_headers_leave_the_answer_as_it_is() -> None:
    own = [(b"content-type", b"application/json"), *limits(5, 3, 10)]
    assert with_guard_headers(own, []) == own
