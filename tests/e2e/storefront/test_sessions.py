"""The storefront's session outside development, on a `mercato up` of its own
(``ENVIRONMENT=testing``) whose access tokens live the shortest time allowed: the cookie is
``__Host-`` and ``Secure``, an expired access token is swapped for a new pair without the
user noticing, and a password change or reset ends the other sessions, not this one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from support.mail import mailed_link
from support.processes import RunningMercato, free_ports, mercato_up
from support.storefront import PASSWORD, Browser, reset_with
from support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

#: ACCESS_TOKEN_TTL's minimum; the storefront refreshes 30 s before expiry, so at every page.
ACCESS_TOKEN_TTL = 30
NEW_PASSWORD = "Window-Garden-4"


@pytest.fixture(scope="module")
def secure_shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMercato]:
    env = {"ENVIRONMENT": "testing", "ACCESS_TOKEN_TTL": str(ACCESS_TOKEN_TTL)}
    with mercato_up(tmp_path_factory.mktemp("secure-shop"), free_ports(), env=env) as running:
        yield running


def a_browser(shop: RunningMercato) -> Browser:
    """A browser that sends ``Secure`` cookies back over this test's plain http, as it
    would over the HTTPS of the proxy in front (httpx, rightly, keeps them to https)."""
    browser = Browser(shop.base_url)

    async def as_if_over_tls(_response: httpx.Response) -> None:
        for cookie in browser.http.cookies.jar:
            cookie.secure = False

    browser.http.event_hooks["response"].append(as_if_over_tls)
    return browser


@pytest.fixture
async def browser(secure_shop: RunningMercato) -> AsyncIterator[Browser]:
    async with a_browser(secure_shop) as browser:
        yield browser


async def test_outside_development_the_cookie_is_host_only_and_secure(browser: Browser) -> None:
    page = await browser.get("/login")

    cookie = page.headers["set-cookie"]
    assert cookie.startswith("__Host-mercato-session=")
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"secure", "httponly", "path", "samesite"} <= attributes
    assert "domain" not in attributes  # __Host-: this host only
    assert "Path=/" in cookie
    assert "SameSite=lax" in cookie
    await browser.sign_up()  # the cookie comes back and carries the session
    assert 'href="/account"' in (await browser.get("/")).text


async def test_an_expired_access_token_is_refreshed_without_signing_out(browser: Browser) -> None:
    username = await browser.sign_up()

    await asyncio.sleep(ACCESS_TOKEN_TTL + 1)  # the access token of the sign-in is dead now
    first = await browser.get("/account")
    # The first visit rotated the refresh token: had the new pair not been stored, this
    # one would present the old token, a reuse, and the auth service would end the session.
    second = await browser.get("/account")

    assert (first.status_code, second.status_code) == (200, 200)
    assert f"<strong>{username}</strong>" in second.text


async def test_a_password_change_ends_the_other_sessions_but_not_this_one(
    secure_shop: RunningMercato, browser: Browser
) -> None:
    username = await browser.sign_up()
    async with a_browser(secure_shop) as elsewhere:
        await elsewhere.sign_in(username, PASSWORD)

        changed = await browser.submit(
            "/account",
            {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            action="/account/password",
        )

        assert changed.status_code == 303
        # Each page refreshes the tokens here: only a family still alive gets through.
        assert (await browser.get("/account")).status_code == 200
        assert (await browser.get("/account")).status_code == 200
        signed_out = await elsewhere.get("/account")
        assert (signed_out.status_code, signed_out.headers["location"]) == (
            303,
            "/login?next=/account",
        )


async def test_a_reset_ends_every_session_of_the_account(
    secure_shop: RunningMercato, browser: Browser
) -> None:
    username = await browser.sign_up()
    address = f"{username}@example.com"
    async with a_browser(secure_shop) as resetting:
        assert (await resetting.submit("/forgot", {"email": address})).status_code == 202
        link = await eventually(lambda: mailed_link(secure_shop.data_dir / "outbox-mail", address))
        reset = await reset_with(resetting, link, NEW_PASSWORD)
        assert reset.status_code == 303

    assert (await browser.get("/account")).status_code == 303
