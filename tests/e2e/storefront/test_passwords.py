"""A forgotten password through the storefront: the forgot form, the mailed link (read from
the ``.eml`` file), the reset form, then signing in with the new password."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from support.mail import mailed_link
from support.processes import RunningMercato
from support.storefront import PASSWORD, Browser, can_sign_in, field_error, reset_with
from support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

NEW_PASSWORD = "Lantern-Quiet-5"
SENT = "If an account uses this address, we sent a link"
INVALID = "This link is invalid or has expired"


async def ask_for_a_link(shop: RunningMercato, browser: Browser, username: str) -> str:
    """The path of the reset link mailed to ``username``'s address, asked on /forgot."""
    answer = await browser.submit("/forgot", {"email": f"{username}@example.com"})
    assert answer.status_code == 202, answer.text
    link = await eventually(
        lambda: mailed_link(shop.data_dir / "outbox-mail", f"{username}@example.com")
    )
    assert link.startswith(f"{shop.base_url}/reset?token="), link  # PUBLIC_URL's /reset page
    parts = urlsplit(link)
    return f"{parts.path}?{parts.query}"


async def registered(shop: RunningMercato) -> str:
    async with Browser(shop.base_url) as other:
        return await other.sign_up()


async def test_the_forgot_form_answers_the_same_page_for_any_address(
    shop: RunningMercato, browser: Browser
) -> None:
    username = await registered(shop)
    page = await browser.get("/forgot")
    assert page.status_code == 200
    assert '<label for="f-email">' in page.text

    known = await browser.submit("/forgot", {"email": f"{username}@example.com"})
    unknown = await browser.submit("/forgot", {"email": f"nobody-{username}@example.com"})

    assert known.status_code == unknown.status_code == 202
    assert SENT in known.text
    assert known.text == unknown.text


async def test_a_reset_through_the_mailed_link_replaces_the_password_once(
    shop: RunningMercato, browser: Browser
) -> None:
    username = await registered(shop)
    link = await ask_for_a_link(shop, browser, username)
    form = await browser.get(link)
    assert form.status_code == 200
    assert 'name="token"' in form.text
    assert '<meta name="referrer" content="no-referrer">' in form.text

    reset = await reset_with(browser, link, NEW_PASSWORD)

    assert reset.status_code == 303
    assert reset.headers["location"] == "/login"
    assert "Password changed, sign in" in (await browser.get("/login")).text
    assert not await can_sign_in(shop.base_url, username, PASSWORD)
    assert await can_sign_in(shop.base_url, username, NEW_PASSWORD)

    again = await reset_with(browser, link, "Another-Try-8")

    assert again.status_code == 400
    assert INVALID in again.text
    assert await can_sign_in(shop.base_url, username, NEW_PASSWORD)


async def test_a_weak_new_password_is_shown_next_to_it_and_the_link_still_works(
    shop: RunningMercato, browser: Browser
) -> None:
    username = await registered(shop)
    link = await ask_for_a_link(shop, browser, username)

    weak = await reset_with(browser, link, "weakling")

    assert weak.status_code == 422
    assert field_error(weak.text, "new_password")
    assert "weakling" not in weak.text
    assert await can_sign_in(shop.base_url, username, PASSWORD)
    fixed = await reset_with(browser, link, NEW_PASSWORD)
    assert fixed.status_code == 303


@pytest.mark.parametrize("token", ["", "not-a-token", '"><script>alert(1)</script>'])
async def test_a_link_without_a_valid_token_is_refused(browser: Browser, token: str) -> None:
    page = await browser.get("/reset", params={"token": token})
    if token:  # the token is checked only when the form is posted
        assert page.status_code == 200
        assert "<script>alert(1)</script>" not in page.text
        page = await reset_with(browser, f"/reset?{urlsplit(str(page.url)).query}", NEW_PASSWORD)

    assert page.status_code == 400
    assert INVALID in page.text


async def test_the_forgot_form_shows_an_invalid_address_as_text(browser: Browser) -> None:
    answer = await browser.submit("/forgot", {"email": "<b>me</b>@"})

    assert answer.status_code == 422
    assert field_error(answer.text, "email")
    assert 'value="&lt;b&gt;me&lt;/b&gt;@"' in answer.text
    assert "<b>me</b>" not in answer.text


async def test_too_many_requests_for_one_address_are_refused(
    shop: RunningMercato, browser: Browser
) -> None:
    address = {"email": f"{await registered(shop)}@example.com"}
    for _ in range(5):  # RATE_LIMIT_PASSWORD_RESET: 5 an hour for one address
        assert (await browser.submit("/forgot", address)).status_code == 202

    refused = await browser.submit("/forgot", address)

    assert refused.status_code == 429
    assert "Too many reset requests" in refused.text
    assert int(refused.headers["retry-after"]) > 0


async def test_the_forms_refuse_a_post_without_the_csrf_token(
    shop: RunningMercato, browser: Browser
) -> None:
    username = await registered(shop)
    link = await ask_for_a_link(shop, browser, username)
    token = parse_qs(urlsplit(link).query)["token"][0]

    forgot = await browser.http.post("/forgot", data={"email": f"{username}@example.com"})
    reset = await browser.http.post("/reset", data={"token": token, "new_password": NEW_PASSWORD})

    assert (forgot.status_code, reset.status_code) == (403, 403)
    assert await can_sign_in(shop.base_url, username, PASSWORD)
    used = await reset_with(browser, link, NEW_PASSWORD)
    assert used.status_code == 303  # the link was not spent by the refused post


async def test_a_reset_from_a_signed_in_browser_signs_it_out(
    shop: RunningMercato, browser: Browser
) -> None:
    username = await browser.sign_up()
    link = await ask_for_a_link(shop, browser, username)

    reset = await reset_with(browser, link, NEW_PASSWORD)

    assert reset.status_code == 303
    page = await browser.get("/login")  # not sent on to "/": nobody is signed in
    assert page.status_code == 200
    assert "Password changed, sign in" in page.text
    assert (await browser.get("/account")).headers["location"] == "/login?next=/account"
