"""The shop in a browser with JavaScript turned off: every page works, the order status is
right on reload, and an administrator's delete goes through without a question."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from support.browser import Customer, ShopApi, sign_in, sign_out
from support.storefront import ADMIN, ADMIN_PASSWORD

pytestmark = pytest.mark.browser


def test_an_order_is_placed_seen_confirmed_on_reload_and_cancelled(
    page_without_javascript: Page, catalogue: dict[str, dict[str, Any]], customer: Customer
) -> None:
    page = page_without_javascript
    sign_in(page, customer.username, customer.password)
    page.goto(f"/products/{catalogue['Desk lamp']['id']}")
    page.get_by_label("Quantity").fill("1")
    page.get_by_role("button", name="Place order").click()

    status = page.locator("main li", has_text="Desk lamp").locator(".status")
    deadline = time.monotonic() + 10
    while not re.fullmatch("confirmed", status.inner_text().strip(), re.IGNORECASE):
        assert time.monotonic() < deadline, f"still {status.inner_text()!r}"
        page.reload()

    page.get_by_role("button", name=re.compile("Cancel")).click()
    expect(status).to_have_text(re.compile("cancelled", re.IGNORECASE))
    sign_out(page)


def test_an_administrator_deletes_a_product_without_a_question(
    page_without_javascript: Page, api: ShopApi
) -> None:
    page = page_without_javascript
    name = f"Teapot {uuid.uuid4().hex[:6]}"
    api.product(
        api.token(ADMIN, ADMIN_PASSWORD),
        sku=f"TEA-{uuid.uuid4().hex[:8]}",
        name=name,
        price="14.00",
        category="kitchenware",
    )
    sign_in(page, ADMIN, ADMIN_PASSWORD)
    page.goto("/admin/products")
    main = page.get_by_role("main")
    main.get_by_role("searchbox", name="Search").fill(name)
    main.get_by_role("button", name="Search").click()

    page.get_by_role("button", name=f"Delete {name}").click()

    expect(page.get_by_role("status")).to_have_text("The product was deleted.")
    expect(page.get_by_role("link", name=name, exact=True)).to_have_count(0)
