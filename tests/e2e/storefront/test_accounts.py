"""Signing up, the account page and the password change, as a browser without JavaScript."""

from __future__ import annotations

import uuid

import httpx
import pytest

from support.processes import RunningMercato
from support.storefront import PASSWORD, Browser, can_sign_in, field_error
from support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

NEW_PASSWORD = "Battery-Staple-7"
MARKUP = "<script>alert(1)</script>"
NOT_A_NUMBER = "Enter your age as a whole number, like 42."


def new_name() -> str:
    return f"acct{uuid.uuid4().hex[:10]}"


def sign_up_form(username: str, **changes: str) -> dict[str, str]:
    return {
        "username": username,
        "email": f"{username}@example.com",
        "password": PASSWORD,
        **changes,
    }


async def profile_page(browser: Browser) -> httpx.Response:
    """The account page once the profile exists (made from ``user.registered``)."""

    async def shown() -> httpx.Response | None:
        page = await browser.get("/account")
        assert page.status_code == 200, page.text
        return None if "still being set up" in page.text else page

    return await eventually(shown)


async def change_password(browser: Browser, current: str, new: str) -> httpx.Response:
    """Post the account page's password form."""
    return await browser.submit(
        "/account", {"current_password": current, "new_password": new}, action="/account/password"
    )


# --- sign-up ----------------------------------------------------------------------------


async def test_signing_up_signs_the_new_user_in_with_a_welcome(browser: Browser) -> None:
    username = new_name()
    page = await browser.get("/register")
    assert page.status_code == 200
    assert '<label for="f-username">' in page.text

    answer = await browser.submit("/register", sign_up_form(username, full_name="Ada", age="36"))

    assert answer.status_code == 303
    assert answer.headers["location"] == "/"
    home = await browser.get("/")
    assert f"Welcome to Mercato, {username}!" in home.text
    assert 'href="/account">' + username in home.text
    assert (await browser.get("/register")).headers["location"] == "/account"
    profile = await profile_page(browser)
    assert 'value="Ada"' in profile.text
    assert 'value="36"' in profile.text


async def test_the_apis_validation_errors_are_shown_next_to_their_fields(
    shop: RunningMercato, browser: Browser
) -> None:
    username = new_name()
    answer = await browser.submit(
        "/register",
        sign_up_form("x!", email=f"{username}@example.com", password="weak", full_name=MARKUP),
    )

    assert answer.status_code == 422
    assert field_error(answer.text, "username")
    assert field_error(answer.text, "password")
    assert field_error(answer.text, "email") is None
    assert 'role="alert"' in answer.text
    assert f'value="{username}@example.com"' in answer.text  # kept
    assert 'value="x!"' in answer.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in answer.text  # kept, as text
    assert MARKUP not in answer.text
    assert 'value="weak"' not in answer.text  # never the password
    assert not await can_sign_in(shop.base_url, "x!", "weak")


async def test_an_age_that_is_no_number_is_refused_before_any_account_exists(
    shop: RunningMercato, browser: Browser
) -> None:
    username = new_name()

    answer = await browser.submit("/register", sign_up_form(username, age="forty"))

    assert answer.status_code == 422
    assert field_error(answer.text, "age") == NOT_A_NUMBER
    assert 'value="forty"' in answer.text
    assert not await can_sign_in(shop.base_url, username, PASSWORD)
    out_of_range = await browser.submit("/register", sign_up_form(username, age="200"))
    assert out_of_range.status_code == 422
    assert field_error(out_of_range.text, "age")  # the API's own message


@pytest.mark.parametrize("taken", ["username", "email"])
async def test_a_taken_username_or_address_is_shown_next_to_its_field(
    shop: RunningMercato, browser: Browser, taken: str
) -> None:
    first = new_name()
    async with Browser(shop.base_url) as other:
        assert (await other.submit("/register", sign_up_form(first))).status_code == 303
    second = sign_up_form(new_name())
    second[taken] = sign_up_form(first)[taken].upper()  # whatever its case

    answer = await browser.submit("/register", second)

    assert answer.status_code == 409
    assert "already registered" in (field_error(answer.text, taken) or "")
    assert field_error(answer.text, {"username": "email", "email": "username"}[taken]) is None


async def test_a_sign_up_without_the_csrf_token_creates_nothing(
    shop: RunningMercato, browser: Browser
) -> None:
    username = new_name()
    await browser.get("/register")

    answer = await browser.http.post("/register", data=sign_up_form(username))

    assert answer.status_code == 403
    assert not await can_sign_in(shop.base_url, username, PASSWORD)


# --- the account page -------------------------------------------------------------------


async def test_the_account_page_needs_a_signed_in_user(browser: Browser) -> None:
    page = await browser.get("/account")

    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=/account"


async def test_the_profile_is_edited_and_shown_as_text(browser: Browser) -> None:
    username = await browser.sign_up()
    await profile_page(browser)

    saved = await browser.submit("/account", {"full_name": MARKUP, "age": " 41 "})

    assert saved.status_code == 303
    assert saved.headers["location"] == "/account"
    page = await browser.get("/account")
    assert "Your profile was saved." in page.text
    assert 'value="&lt;script&gt;alert(1)&lt;/script&gt;"' in page.text
    assert MARKUP not in page.text
    assert 'value="41"' in page.text
    assert f"<strong>{username}</strong>" in page.text

    cleared = await browser.submit("/account", {"full_name": "Ada", "age": ""})

    assert cleared.status_code == 303
    page = await browser.get("/account")
    assert 'value="Ada"' in page.text
    assert 'id="f-age" name="age" type="text" value=""' in page.text


@pytest.mark.parametrize(
    ("age", "error"),
    [("4 2", NOT_A_NUMBER), ("-3", None), ("151", None)],
)
async def test_a_wrong_age_is_shown_next_to_it_and_nothing_changes(
    browser: Browser, age: str, error: str | None
) -> None:
    await browser.sign_up()
    await profile_page(browser)
    assert (await browser.submit("/account", {"full_name": "Ada", "age": "30"})).status_code == 303

    answer = await browser.submit("/account", {"full_name": "Grace", "age": age})

    assert answer.status_code == 422
    shown = field_error(answer.text, "age")
    assert shown == error if error else shown  # ours, or the API's range message
    assert 'value="Grace"' in answer.text  # what was posted, kept
    page = await browser.get("/account")
    assert 'value="Ada"' in page.text
    assert 'value="30"' in page.text


async def test_the_account_forms_refuse_a_post_without_the_csrf_token(
    shop: RunningMercato, browser: Browser
) -> None:
    username = await browser.sign_up()
    await profile_page(browser)

    profile = await browser.http.post("/account", data={"full_name": "Mallory", "age": "1"})
    password = await browser.http.post(
        "/account/password", data={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )

    assert (profile.status_code, password.status_code) == (403, 403)
    assert "Mallory" not in (await browser.get("/account")).text
    assert await can_sign_in(shop.base_url, username, PASSWORD)


# --- the password change ----------------------------------------------------------------


async def test_changing_the_password_keeps_this_session_and_retires_the_old_one(
    shop: RunningMercato, browser: Browser
) -> None:
    username = await browser.sign_up()

    changed = await change_password(browser, PASSWORD, NEW_PASSWORD)

    assert changed.status_code == 303
    assert changed.headers["location"] == "/account"
    page = await browser.get("/account")
    assert page.status_code == 200
    assert "Your password was changed." in page.text
    assert not await can_sign_in(shop.base_url, username, PASSWORD)
    assert await can_sign_in(shop.base_url, username, NEW_PASSWORD)


async def test_a_wrong_current_password_is_shown_next_to_it(browser: Browser) -> None:
    await browser.sign_up()

    answer = await change_password(browser, "Not-The-One-1", NEW_PASSWORD)

    assert answer.status_code == 400
    assert field_error(answer.text, "current_password") == "This is not your current password."
    assert "Check the fields marked below." in answer.text
    assert field_error(answer.text, "new_password") is None
    assert "Not-The-One-1" not in answer.text


async def test_a_weak_new_password_is_shown_next_to_it(
    shop: RunningMercato, browser: Browser
) -> None:
    username = await browser.sign_up()

    answer = await change_password(browser, PASSWORD, "weakling")

    assert answer.status_code == 422
    assert field_error(answer.text, "new_password")
    assert field_error(answer.text, "current_password") is None
    assert await can_sign_in(shop.base_url, username, PASSWORD)
