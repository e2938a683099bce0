"""Signing in and out of the storefront, as a browser without JavaScript."""

from __future__ import annotations

import pytest

from support.processes import RunningMercato
from support.storefront import ADMIN, ADMIN_PASSWORD, Browser, csrf_token

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


async def test_the_catalogue_is_a_page_with_the_security_headers(browser: Browser) -> None:
    page = await browser.get("/")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"
    assert "<h1>Catalogue</h1>" in page.text
    assert "set-cookie" not in page.headers  # a visitor who fills in no form gets no session


async def test_signing_in_starts_a_new_session_and_signing_out_ends_it(browser: Browser) -> None:
    await browser.get("/login")
    anonymous = browser.http.cookies["mercato-session"]

    signed_in = await browser.sign_in(ADMIN, ADMIN_PASSWORD)

    cookie = signed_in.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    session = browser.http.cookies["mercato-session"]
    assert session != anonymous
    assert ADMIN in (await browser.get("/")).text

    signed_out = await browser.submit("/", {}, action="/logout")

    assert signed_out.status_code == 303
    assert "mercato-session" not in browser.http.cookies
    browser.http.cookies.set("mercato-session", session)  # the old cookie, replayed
    assert ADMIN not in (await browser.get("/")).text


async def test_a_wrong_password_shows_the_form_again(browser: Browser) -> None:
    answer = await browser.submit("/login", {"username": ADMIN, "password": "Wrong-Pass-1"})

    assert answer.status_code == 401
    assert "Wrong username or password." in answer.text
    assert 'value="shopadmin"' in answer.text


@pytest.mark.parametrize("token", [None, "forged", "other-session"])
async def test_a_form_without_this_sessions_token_is_refused(
    shop: RunningMercato, browser: Browser, token: str | None
) -> None:
    await browser.get("/login")  # this browser has a session of its own
    data = {"username": ADMIN, "password": ADMIN_PASSWORD}
    if token == "forged":
        data["csrf_token"] = "forged"
    elif token == "other-session":
        async with Browser(shop.base_url) as other:
            data["csrf_token"] = csrf_token((await other.get("/login")).text)

    answer = await browser.http.post("/login", data=data)

    assert answer.status_code == 403
    assert "location" not in answer.headers
    assert ADMIN not in (await browser.get("/")).text


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("multipart/form-data; boundary=x", b"--x--", 415),
        ("application/x-www-form-urlencoded", b"a=" + b"x" * 70_000, 413),
        ("application/x-www-form-urlencoded", b"username=%ff%fe", 400),
    ],
)
async def test_a_form_that_is_not_a_small_urlencoded_one_is_refused_unread(
    browser: Browser, content_type: str, body: bytes, status: int
) -> None:
    await browser.get("/login")

    answer = await browser.http.post("/login", content=body, headers={"content-type": content_type})

    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("text/html")
