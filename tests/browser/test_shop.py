"""Searching, product pages and orders in a real browser: markup in a query or a product's
name stays text, and an order placed is seen confirmed live, then cancelled."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from support.browser import MARKUP_NAME, Customer, shoot, sign_in

pytestmark = pytest.mark.browser

Catalogue = dict[str, dict[str, Any]]


def test_a_search_for_a_script_shows_it_as_text(page: Page, catalogue: Catalogue) -> None:
    payload = '<script>alert("q")</script>'
    page.goto("/")
    page.get_by_role("searchbox", name="Search products").fill(payload)
    page.get_by_role("button", name="Search", exact=True).click()

    expect(page.get_by_role("heading", level=1)).to_contain_text(payload)
    expect(page.locator("main script")).to_have_count(0)
    expect(page.get_by_role("searchbox", name="Search products")).to_have_value(payload)


def test_a_search_finds_a_product_by_a_word_of_its_name(page: Page, catalogue: Catalogue) -> None:
    page.goto("/search?q=lamp")

    expect(page.get_by_role("link", name="Desk lamp")).to_be_visible()
    shoot(page, "search")


def test_a_product_named_with_markup_is_shown_as_text(
    page: Page, catalogue: Catalogue, customer: Customer
) -> None:
    sign_in(page, customer.username, customer.password)
    page.goto("/")
    page.get_by_role("link", name=MARKUP_NAME, exact=True).click()

    expect(page.get_by_role("heading", level=1)).to_have_text(MARKUP_NAME)
    expect(page.get_by_text(catalogue[MARKUP_NAME]["description"])).to_be_visible()
    expect(page.locator("main img, main b, main em")).to_have_count(0)
    expect(page.get_by_text("5 in stock")).to_be_visible()
    shoot(page, "product")


def test_a_visitor_is_asked_to_sign_in_to_order(page: Page, catalogue: Catalogue) -> None:
    page.goto(f"/products/{catalogue['Desk lamp']['id']}")

    expect(page.get_by_label("Quantity")).to_have_count(0)
    page.get_by_role("link", name="Sign in to order").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")


def test_an_order_placed_becomes_confirmed_on_the_page_and_can_be_cancelled(
    page: Page, catalogue: Catalogue, customer: Customer
) -> None:
    sign_in(page, customer.username, customer.password)
    page.goto(f"/products/{catalogue['Espresso cup']['id']}")
    page.get_by_label("Quantity").fill("2")
    page.get_by_role("button", name="Place order").click()

    expect(page).to_have_url(re.compile(r"/orders$"))
    order = page.locator("main li", has_text="Espresso cup")
    expect(order).to_have_count(1)
    expect(order.get_by_text("15.00 USD").first).to_be_visible()
    # Confirmed without a reload: the page follows the order's status by itself.
    expect(order.locator(".status")).to_have_text(re.compile("confirmed", re.IGNORECASE))
    shoot(page, "orders")

    order.get_by_role("button", name=re.compile("Cancel")).click()

    expect(page.get_by_role("status").first).to_be_visible()
    expect(order.locator(".status")).to_have_text(re.compile("cancelled", re.IGNORECASE))
    expect(order.get_by_role("button", name=re.compile("Cancel"))).to_have_count(0)
