"""The product page and search, as a browser without JavaScript."""

from __future__ import annotations

import uuid

import pytest

from support.storefront import Browser, Stockroom, hidden_field

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

MARKUP = '<script>alert("x")</script><b>bold</b>'
ESCAPED = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;"


async def test_a_product_page_shows_markup_in_its_name_as_text(
    browser: Browser, stockroom: Stockroom
) -> None:
    product = await stockroom.add(name=MARKUP, description=f"Line one\n{MARKUP}", stock=7)

    page = await browser.get(f"/products/{product['id']}")

    assert page.status_code == 200
    assert f"<h1>{ESCAPED}</h1>" in page.text
    assert f"<title>{ESCAPED} · Mercato</title>" in page.text
    assert page.text.count(ESCAPED) == 3  # title, heading, description
    assert "<script>alert" not in page.text
    assert "<b>bold" not in page.text
    assert "7 in stock" in page.text
    assert "9.99 USD" in page.text


async def test_a_visitor_is_asked_to_sign_in_to_order(
    browser: Browser, stockroom: Stockroom
) -> None:
    product = await stockroom.add()

    page = await browser.get(f"/products/{product['id']}")

    assert f'href="/login?next=/products/{product["id"]}">Sign in to order</a>' in page.text
    assert 'name="quantity"' not in page.text


async def test_a_shopper_gets_an_order_form_bounded_by_the_stock(
    browser: Browser, stockroom: Stockroom
) -> None:
    await browser.sign_up()
    scarce, plenty = await stockroom.add(stock=3), await stockroom.add(stock=500)

    shown = await browser.get(f"/products/{scarce['id']}")
    again = await browser.get(f"/products/{scarce['id']}")

    assert '<form class="stack" method="post" action="/orders">' in shown.text
    assert hidden_field(shown.text, "product_id") == scarce["id"]
    assert 'name="quantity" type="number" value="1" required min="1" max="3"' in shown.text
    assert '<label for="f-shipping_address">' in shown.text
    # each form shown has its own idempotency key: two forms are two orders
    assert hidden_field(shown.text, "idempotency_key") != hidden_field(
        again.text, "idempotency_key"
    )
    assert 'max="100"' in (await browser.get(f"/products/{plenty['id']}")).text


async def test_a_product_out_of_stock_has_no_order_form(
    browser: Browser, stockroom: Stockroom
) -> None:
    await browser.sign_up()
    product = await stockroom.add(stock=0)

    page = await browser.get(f"/products/{product['id']}")

    assert page.status_code == 200
    assert "Out of stock" in page.text
    assert 'name="quantity"' not in page.text


@pytest.mark.parametrize(
    "product_id",
    [str(uuid.uuid4()), "%3Cscript%3E", "%2E%2E", "x" * 65],
    ids=["unknown", "markup", "dot-segment", "too-long"],
)
async def test_an_unknown_or_malformed_product_is_a_404_page(
    browser: Browser, product_id: str
) -> None:
    page = await browser.get(f"/products/{product_id}")

    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "<h1>Product not found</h1>" in page.text
    assert "<script>" not in page.text


async def test_search_finds_products_by_name_paged(browser: Browser, stockroom: Stockroom) -> None:
    word = f"zq{uuid.uuid4().hex[:8]}"
    for number in range(13):  # one more than a page (STOREFRONT_PAGE_SIZE is 12)
        await stockroom.add(name=f"{word} lamp {number:02d}")

    first = await browser.get("/search", params={"q": word})
    second = await browser.get("/search", params={"q": word, "page": "2"})

    assert first.status_code == 200
    assert f"<h1>Search results for “{word}”</h1>" in first.text
    assert f'name="q" type="search" value="{word}"' in first.text
    assert "13 products found" in first.text
    assert first.text.count(f"{word} lamp") == 12
    assert f'href="/search?page=2&amp;q={word}">Next</a>' in first.text
    assert second.text.count(f"{word} lamp") == 1
    assert f"{word} lamp 12" in second.text


async def test_search_shows_a_markup_query_as_text(browser: Browser, stockroom: Stockroom) -> None:
    await stockroom.add(name=f"{MARKUP} poster")

    page = await browser.get("/search", params={"q": MARKUP})

    assert page.status_code == 200
    assert f"<h1>Search results for “{ESCAPED}”</h1>" in page.text
    assert f'type="search" value="{ESCAPED}"' in page.text
    assert f"{ESCAPED} poster" in page.text  # found, and its name shown as text too
    assert "<script>alert" not in page.text


@pytest.mark.parametrize("q", ["", "   "])
async def test_an_empty_search_asks_for_words(browser: Browser, q: str) -> None:
    page = await browser.get("/search", params={"q": q})

    assert page.status_code == 200
    assert "<h1>Search</h1>" in page.text
    assert "Type a word" in page.text


async def test_a_query_the_api_refuses_is_a_422_page(browser: Browser) -> None:
    page = await browser.get("/search", params={"q": "a" * 201})

    assert page.status_code == 422
    assert page.headers["content-type"].startswith("text/html")
    assert 'role="alert"' in page.text
    assert "cannot be searched for" in page.text
