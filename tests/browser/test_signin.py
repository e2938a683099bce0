"""Signing in and out in a real browser, the catalogue at both widths, and a form posted
from another site."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from support.browser import (
    CATEGORY,
    MARKUP_NAME,
    Customer,
    ShopApi,
    shoot,
    sign_in,
    sign_out,
    signed_in_as,
)
from support.processes import RunningMercato

pytestmark = pytest.mark.browser


def test_the_catalogue_at_both_widths_shows_a_name_of_markup_as_text(
    page: Page, catalogue: dict[str, dict[str, Any]]
) -> None:
    page.goto("/")

    expect(page.get_by_role("heading", level=1)).to_have_text("Catalogue")
    expect(page.get_by_role("link", name=MARKUP_NAME, exact=True)).to_be_visible()
    expect(page.locator("main img, main b")).to_have_count(0)
    expect(page.get_by_role("link", name="Next")).to_be_visible()
    shoot(page, "catalogue")


def test_the_category_filter_narrows_the_catalogue(
    page: Page, catalogue: dict[str, dict[str, Any]]
) -> None:
    page.goto("/")
    page.get_by_label("Category").fill(CATEGORY)
    page.get_by_role("button", name="Filter").click()

    expect(page.get_by_role("heading", level=1)).to_have_text(f"Category: {CATEGORY}")
    names = page.get_by_role("list").first.get_by_role("heading", level=2)
    expect(names).to_have_text(sorted(catalogue))
    expect(page.get_by_text("Out of stock")).to_be_visible()


def test_signing_in_and_out(page: Page, customer: Customer) -> None:
    page.goto("/")
    page.get_by_role("link", name="Sign in").click()
    shoot(page, "sign-in")

    sign_in(page, customer.username, customer.password)

    assert page.url.endswith("/")
    session = cookie_of(page)
    sign_out(page)
    expect(signed_in_as(page, customer.username)).to_have_count(0)
    assert cookie_of(page) is None
    page.context.add_cookies([session])  # the old cookie, replayed, is dead
    page.goto("/")
    expect(page.get_by_role("link", name="Sign in")).to_be_visible()
    expect(signed_in_as(page, customer.username)).to_have_count(0)


def test_a_wrong_password_is_said_next_to_the_form(page: Page, customer: Customer) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(customer.username)
    page.get_by_label("Password").fill("Not-The-Password-1")
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    expect(page.get_by_label("Username")).to_have_value(customer.username)
    expect(page.get_by_label("Password")).to_have_value("")


# The browser sends no cookie with another site's POST (SameSite=Lax): the shop sees a
# visitor without a session, whose form has no token: 403, before anything else is decided.
@pytest.mark.parametrize(
    ("action", "answer"),
    [("/logout", (403, None)), ("/login", (403, None)), ("/orders", (403, None))],
)
def test_a_form_posted_from_another_site_is_refused_and_changes_nothing(
    page: Page,
    shop: RunningMercato,
    api: ShopApi,
    catalogue: dict[str, dict[str, Any]],
    customer: Customer,
    other_site: Callable[[str], str],
    action: str,
    answer: tuple[int, str | None],
) -> None:
    """Another site's page posts a form to the shop while the customer is signed in, to
    sign them out, to sign them in as the attacker, or to order in their name."""
    attacker = api.customer()
    fields = {
        "username": attacker.username,
        "password": attacker.password,
        "product_id": catalogue["Desk lamp"]["id"],
        "quantity": "1",
    }
    sign_in(page, customer.username, customer.password)
    evil = other_site(
        f'<form method="post" action="{shop.base_url}{action}">'
        + "".join(f'<input name="{name}" value="{value}">' for name, value in fields.items())
        + "</form><script>document.forms[0].submit()</script>"
    )

    with page.expect_response(f"{shop.base_url}{action}") as posted:
        page.goto(evil)

    assert (posted.value.status, posted.value.headers.get("location")) == answer
    page.goto("/")
    expect(signed_in_as(page, customer.username)).to_be_visible()
    expect(signed_in_as(page, attacker.username)).to_have_count(0)
    token = api.token(customer.username, customer.password)
    assert api.orders(token)["total"] == 0


def cookie_of(page: Page) -> Any:
    """The session cookie of the page's context, or None."""
    found = [c for c in page.context.cookies() if c["name"] == "mercato-session"]
    return found[0] if found else None
