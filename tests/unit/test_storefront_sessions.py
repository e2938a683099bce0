"""The storefront's skeleton: signed session cookies, CSRF tokens, safe redirects, paging."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from itsdangerous import TimestampSigner

from mercato.platform.cache import MemoryCache
from mercato.storefront.csrf import CsrfTokens
from mercato.storefront.sessions import REFRESH_MARGIN, Session, SessionStore, SignedIn
from mercato.storefront.web import Pager, safe_next

pytestmark = pytest.mark.anyio

SECRET = "a-test-secret-that-is-long-enough-0123456789"
TTL = 3600


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def a_user(**changes: object) -> SignedIn:
    fields: dict[str, object] = {
        "user_id": "u-1",
        "username": "ada",
        "roles": ("customer",),
        "access_token": "access",
        "refresh_token": "refresh",
        "access_expires_at": time.time() + 900,
        **changes,
    }
    return SignedIn(**fields)  # type: ignore[arg-type]


def other_than(character: str) -> str:
    return "A" if character != "A" else "B"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> SessionStore:
    cache = MemoryCache("storefront-sessions", default_ttl=TTL, clock=clock)
    return SessionStore(cache, secret=SECRET, ttl=TTL)


# --- sessions ---------------------------------------------------------------------------


async def test_a_saved_session_comes_back_from_its_cookie(store: SessionStore) -> None:
    session = Session(user=a_user(), flashes=["Saved."])
    await store.save(session)

    loaded = await store.load(store.cookie_value(session))

    assert loaded == session
    assert loaded is not None
    assert loaded.user is not None
    assert loaded.user.roles == ("customer",)


def test_the_cookie_holds_only_the_signed_id(store: SessionStore) -> None:
    session = Session(user=a_user())

    cookie = store.cookie_value(session)

    assert cookie.startswith(f"{session.id}.")
    assert "access" not in cookie.removeprefix(session.id)


def altered_signature(cookie: str) -> str:
    head, signature = cookie.rsplit(".", 1)
    return f"{head}.{other_than(signature[0])}{signature[1:]}"


@pytest.mark.parametrize(
    "alter",
    [
        # The signature's first character: its last one also holds padding bits, which a
        # decoder ignores, so changing it may not change the signature at all.
        lambda cookie: altered_signature(cookie),
        lambda cookie: other_than(cookie[0]) + cookie[1:],  # the id
        lambda cookie: cookie.rsplit(".", 2)[0],  # no signature at all
        lambda cookie: "",
    ],
)
async def test_an_altered_cookie_is_refused(
    store: SessionStore, alter: Callable[[str], str]
) -> None:
    session = Session()
    await store.save(session)
    cookie = store.cookie_value(session)

    assert await store.load(alter(cookie)) is None


async def test_a_cookie_signed_with_another_secret_is_refused(store: SessionStore) -> None:
    session = Session()
    await store.save(session)
    elsewhere = SessionStore(store.cache, secret="another-secret-" + SECRET, ttl=TTL)

    assert await store.load(elsewhere.cookie_value(session)) is None


async def test_a_cookie_older_than_the_ttl_is_refused(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = Session()
    await store.save(session)
    cookie = store.cookie_value(session)
    signed_at = int(time.time())

    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda _self: signed_at + TTL + 2)

    assert store.session_id(cookie) is None
    assert await store.load(cookie) is None


async def test_a_session_not_saved_for_the_ttl_is_gone(store: SessionStore, clock: Clock) -> None:
    session = Session()
    await store.save(session)
    cookie = store.cookie_value(session)

    clock.now += TTL - 1
    assert await store.load(cookie) is not None
    await store.save(session)  # each save starts the TTL again
    clock.now += TTL - 1
    assert await store.load(cookie) is not None
    clock.now += 2

    assert await store.load(cookie) is None


async def test_a_deleted_session_is_gone(store: SessionStore) -> None:
    session = Session()
    await store.save(session)

    await store.delete(session)

    assert await store.load(store.cookie_value(session)) is None


def test_tokens_are_refreshed_a_margin_before_they_expire() -> None:
    user = a_user(access_expires_at=10_000.0)

    assert not user.needs_refresh(now=10_000.0 - REFRESH_MARGIN - 1)
    assert user.needs_refresh(now=10_000.0 - REFRESH_MARGIN)
    assert user.needs_refresh(now=20_000.0)
    renewed = user.with_tokens("access-2", "refresh-2", expires_in=900)
    assert (renewed.access_token, renewed.refresh_token) == ("access-2", "refresh-2")
    assert not renewed.needs_refresh()


# --- CSRF -------------------------------------------------------------------------------


def test_a_csrf_token_is_valid_for_its_own_session_only() -> None:
    tokens = CsrfTokens(SECRET, max_age=TTL)
    mine, theirs = Session(), Session()

    token = tokens.issue(mine)

    assert tokens.valid(token, mine)
    assert not tokens.valid(token, theirs)
    assert not tokens.valid(tokens.issue(theirs), mine)


@pytest.mark.parametrize("token", [None, "", "forged", 42, "a.b.c"])
def test_a_missing_or_forged_csrf_token_is_refused(token: object) -> None:
    assert not CsrfTokens(SECRET, max_age=TTL).valid(token, Session())


def test_a_csrf_token_of_another_secret_or_too_old_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session = Session()
    tokens = CsrfTokens(SECRET, max_age=TTL)
    foreign = CsrfTokens("another-secret-" + SECRET, max_age=TTL).issue(session)
    token = tokens.issue(session)
    issued_at = int(time.time())

    assert not tokens.valid(foreign, session)
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda _self: issued_at + TTL + 2)
    assert not tokens.valid(token, session)


# --- redirects and paging ---------------------------------------------------------------


@pytest.mark.parametrize("target", ["/", "/orders", "/products/42?from=search", "/a//b"])
def test_a_local_path_is_a_safe_next(target: str) -> None:
    assert safe_next(target) == target


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "/\\evil.example",
        "https://evil.example/",
        "http:/evil.example",
        "javascript:alert(1)",
        "evil.example",
        "",
        None,
        ["/orders"],
    ],
)
def test_anything_but_a_local_path_is_refused(target: object) -> None:
    assert safe_next(target) == "/"
    assert safe_next(target, default="/account") == "/account"


@pytest.mark.parametrize(
    ("asked", "number"),
    [(None, 1), ("", 1), ("1", 1), ("3", 3), ("0", 1), ("-2", 1), ("2.5", 1), ("x", 1)],
)
def test_a_pager_reads_the_page_asked_for(asked: str | None, number: int) -> None:
    pager = Pager.of(asked, 10)

    assert pager.number == number
    assert pager.offset == (number - 1) * 10


def test_a_pager_refuses_an_absurd_page() -> None:
    assert Pager.of("9" * 7, 10).number == 1
    assert Pager.of("999999", 10).offset == 9_999_980


def test_a_pager_knows_its_neighbours() -> None:
    first, middle, last = (Pager.of(n, 10).with_total(25) for n in ("1", "2", "3"))

    assert (first.pages, first.previous, first.next) == (3, None, 2)
    assert (middle.previous, middle.next) == (1, 3)
    assert (last.previous, last.next) == (2, None)
    assert Pager.of("1", 10).with_total(0).pages == 1
    assert Pager.of("1", 10).with_total(0).next is None
    assert Pager.of("1", 10).with_total(20).pages == 2
