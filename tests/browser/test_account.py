"""Signing up, the account page, changing the password and resetting it through the
mailed link, in a real browser."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.sync_api import Page, expect

from support.browser import Customer, mailed_link, shoot, sign_in, sign_out, signed_in_as
from support.processes import RunningMercato
from support.storefront import PASSWORD

pytestmark = pytest.mark.browser

#: The password a test changes to, or resets to.
REPLACEMENT = "Giraffe-Walking-8"


def test_signing_up_shows_an_error_next_to_its_field_then_signs_in(page: Page) -> None:
    username = f"newcomer{uuid.uuid4().hex[:8]}"
    page.goto("/")
    page.get_by_role("link", name="Sign up").click()
    page.get_by_label("Username").fill(username)
    page.get_by_label(re.compile("mail")).fill(f"{username}@example.com")
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Create account").click()

    password = page.get_by_label("Password")
    expect(password).to_have_attribute("aria-invalid", "true")
    expect(password).to_have_accessible_description(re.compile("8"))
    expect(password).to_have_value("")  # never shown back
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.get_by_label("Username")).to_have_value(username)
    shoot(page, "sign-up-error")

    password.fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()

    expect(signed_in_as(page, username)).to_be_visible()


def test_the_account_page_edits_the_profile_and_shows_markup_as_text(
    page: Page, customer: Customer
) -> None:
    sign_in(page, customer.username, customer.password)
    signed_in_as(page, customer.username).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your account")
    name = '<script>alert("name")</script> Ada'

    page.get_by_label("Full name").fill(name)
    page.get_by_label("Age").fill("36")
    page.get_by_role("button", name="Save profile").click()

    expect(page.get_by_role("status")).to_be_visible()
    page.goto("/account")
    expect(page.get_by_label("Full name")).to_have_value(name)
    expect(page.get_by_label("Age")).to_have_value("36")
    shoot(page, "account")


def test_changing_the_password_needs_the_current_one(page: Page, customer: Customer) -> None:
    sign_in(page, customer.username, customer.password)
    page.goto("/account")
    page.get_by_label("Current password").fill("Not-The-Password-1")
    page.get_by_label("New password").fill(REPLACEMENT)
    page.get_by_role("button", name="Change password").click()

    expect(page.get_by_label("Current password")).to_have_attribute("aria-invalid", "true")

    page.get_by_label("Current password").fill(customer.password)
    page.get_by_label("New password").fill(REPLACEMENT)
    page.get_by_role("button", name="Change password").click()

    expect(page.get_by_role("status")).to_be_visible()
    sign_out(page)
    refused(page, customer.username, customer.password)
    sign_in(page, customer.username, REPLACEMENT)


def test_a_forgotten_password_is_reset_through_the_mailed_link_once(
    page: Page, shop: RunningMercato, customer: Customer
) -> None:
    page.goto("/login")
    page.get_by_role("link", name="Forgot your password?").click()
    page.get_by_label(re.compile("mail")).fill(customer.email)
    page.get_by_role("button", name="Send the link").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Check your mail")

    link = mailed_link(shop.data_dir / "outbox-mail", customer.email)
    page.goto(link)
    expect(page.get_by_role("heading", level=1)).to_have_text("Choose a new password")
    page.get_by_label("New password").fill(REPLACEMENT)
    page.get_by_role("button", name="Set the password").click()

    expect(page.get_by_role("status")).to_be_visible()
    refused(page, customer.username, customer.password)
    sign_in(page, customer.username, REPLACEMENT)
    page.goto(link)  # a second time
    page.get_by_label("New password").fill("Another-Horse-9")
    page.get_by_role("button", name="Set the password").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(re.compile("invalid"))


def refused(page: Page, username: str, password: str) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
