"""The administrators' pages in a real browser: a product added, edited and deleted, and
every order filtered by status."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from support.browser import ShopApi, shoot, sign_in
from support.storefront import ADMIN, ADMIN_PASSWORD

pytestmark = pytest.mark.browser


@pytest.fixture
def admin_page(page: Page) -> Page:
    sign_in(page, ADMIN, ADMIN_PASSWORD)
    return page


def test_an_administrator_adds_edits_and_deletes_a_product(
    admin_page: Page, asked: list[str]
) -> None:
    page = admin_page
    name = f"Kettle {uuid.uuid4().hex[:6]}"
    page.get_by_role("link", name="Admin", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Products")
    shoot(page, "admin-products")

    page.get_by_role("link", name="New product").click()
    page.get_by_label("SKU").fill(f"KET-{uuid.uuid4().hex[:8]}")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Price").fill("0")
    page.get_by_label("Stock").fill("3")
    page.get_by_label("Category").fill("kitchenware")
    page.get_by_label("Description").fill("Steel, 1.5 l.")
    page.get_by_role("button", name="Add product").click()

    price = page.get_by_label("Price")
    expect(price).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Name")).to_have_value(name)
    shoot(page, "admin-product-form")
    price.fill("29.00")
    page.get_by_role("button", name="Add product").click()
    expect(page.get_by_role("status")).to_contain_text(name)

    main = page.get_by_role("main")
    main.get_by_role("searchbox", name="Search").fill(name)
    main.get_by_role("button", name="Search").click()
    page.get_by_role("link", name=f"Edit {name}").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Edit {name}")
    page.get_by_label("Price").fill("31.50")
    page.get_by_label("Stock").fill("7")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_contain_text(name)

    page.get_by_role("link", name=name, exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(name)
    expect(page.get_by_text("31.50 USD")).to_be_visible()
    expect(page.get_by_text("7 in stock")).to_be_visible()
    product_url = page.url

    page.go_back()
    page.get_by_role("button", name=f"Delete {name}").click()
    expect(page.get_by_role("status")).to_have_text("The product was deleted.")
    assert [question for question in asked if name in question]  # asked first, said yes
    expect(page.get_by_role("link", name=name, exact=True)).to_have_count(0)
    assert page.goto(product_url).status == 404  # type: ignore[union-attr]


def test_every_order_filtered_by_status(
    admin_page: Page, api: ShopApi, catalogue: dict[str, dict[str, Any]]
) -> None:
    page = admin_page
    buyer = api.customer()
    api.order(api.token(buyer.username, buyer.password), catalogue["Desk lamp"]["id"], 1)
    page.goto("/admin/orders")
    expect(page.get_by_role("heading", level=1)).to_have_text("Orders")
    expect(page.get_by_role("row", name=re.compile(buyer.username))).to_be_visible()
    shoot(page, "admin-orders")

    page.get_by_label("Status").select_option("cancelled")
    page.get_by_role("button", name="Filter").click()

    expect(page).to_have_url(re.compile(r"status=cancelled"))
    expect(page.get_by_role("row", name=re.compile(buyer.username))).to_have_count(0)
