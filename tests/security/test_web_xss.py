"""Stored XSS through the catalogue: product text an administrator typed (or an attacker
who got an admin token) is shown on the storefront as text, never as markup, and the page's
Content-Security-Policy would stop an injected script anyway (OWASP ASVS V1 encoding, V3
web frontend)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from markupsafe import escape

from support.processes import RunningMercato
from support.security_web import admin_token, crawl, create_product, csp_directives
from support.storefront import Browser

pytest_plugins = ["support.security_web_plugin"]
pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

PAYLOADS = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "{{7*7}}",
)
CATEGORY = "xsscheck"


@pytest.fixture(scope="module")
def hostile_products(web_shop: RunningMercato) -> list[str]:
    """One product per payload, the payload as its name and its description; their ids."""
    token = admin_token(web_shop)
    return [
        create_product(web_shop, token, name=payload, description=payload, category=CATEGORY)["id"]
        for payload in PAYLOADS
    ]


@pytest.fixture
async def visitor(web_shop: RunningMercato) -> AsyncIterator[Browser]:
    async with Browser(web_shop.base_url) as browser:
        yield browser


def raw_markup(page: str) -> list[str]:
    """The payloads whose markup reached the page unescaped."""
    return [payload for payload in PAYLOADS[:2] if payload in page]


async def test_product_text_is_shown_escaped_on_the_catalogue(
    visitor: Browser, hostile_products: list[str]
) -> None:
    page = await visitor.get(f"/?category={CATEGORY}")

    assert page.status_code == 200
    assert raw_markup(page.text) == []
    for payload in PAYLOADS:
        assert str(escape(payload)) in page.text, f"{payload} is not on the catalogue"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert ">49<" not in page.text  # {{7*7}} is text, not a template expression


async def test_no_page_that_shows_the_products_renders_their_markup(
    visitor: Browser, hostile_products: list[str]
) -> None:
    start = ["/", f"/?category={CATEGORY}", *(f"/products/{id_}" for id_ in hostile_products)]
    seen = await crawl(visitor.http, start)

    pages = seen.pages()
    assert f"/?category={CATEGORY}" in pages
    unescaped = {path: raw_markup(answer.text) for path, answer in pages.items()}
    assert {path: found for path, found in unescaped.items() if found} == {}


async def test_the_catalogue_forbids_inline_scripts_plugins_and_framing(
    visitor: Browser, hostile_products: list[str]
) -> None:
    page = await visitor.get(f"/?category={CATEGORY}")

    policy = page.headers["content-security-policy"]
    directives = csp_directives(policy)
    assert "'unsafe-inline'" not in policy
    assert "'unsafe-eval'" not in policy
    assert directives["script-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert "<script>" not in page.text  # no inline script the policy would have to allow


async def test_what_a_get_form_reflects_is_escaped(visitor: Browser) -> None:
    """Reflected XSS: every search and filter form the crawl finds, each field set to the
    markup payloads (a link someone else could be sent to)."""
    seen = await crawl(visitor.http, ["/", "/login"])
    forms = {form.action: form for form in seen.forms if form.method == "get"}

    reflected = {}
    for action, form in forms.items():
        for payload in PAYLOADS[:2]:
            page = await visitor.get(action, params=dict.fromkeys(form.fields, payload))
            if raw_markup(page.text):
                reflected[f"{action} {sorted(form.fields)}"] = page.status_code
    assert "/" in forms  # the catalogue's category filter
    assert reflected == {}
