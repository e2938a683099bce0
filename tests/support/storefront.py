"""A browser without JavaScript for the storefront's HTTP tests: an httpx client with a
cookie jar that fills in the CSRF token of the form it was shown, as a browser would."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from html import unescape
from html.parser import HTMLParser
from typing import Any

import httpx

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

#: The administrator every storefront test run bootstraps (MERCATO_ADMIN_*).
ADMIN, ADMIN_PASSWORD = "shopadmin", "Shop-Admin-Pass-42"
PASSWORD = "Correct-Horse-9"
#: The environment of the `mercato up` the storefront's HTTP and browser tests share: the
#: administrator, and limits that let every test sign in afresh, all from one client
#: address (127.0.0.1), within a minute (the limits themselves are the auth tests' matter).
SHOP_ENV = {
    "MERCATO_ADMIN_USERNAME": ADMIN,
    "MERCATO_ADMIN_PASSWORD": ADMIN_PASSWORD,
    "RATE_LIMIT_LOGIN": "1000/minute",
    "RATE_LIMIT_LOGIN_ADDRESS": "100000/minute",
    "RATE_LIMIT_PASSWORD_RESET_ADDRESS": "10000/minute",
}


def csrf_token(html: str) -> str:
    """The first CSRF token on a page (every form of a page carries the same one)."""
    found = _CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return unescape(found.group(1))


def hidden_field(html: str, name: str) -> str:
    """The value of the first hidden field called ``name`` on a page."""
    found = re.search(rf'<input type="hidden" name="{re.escape(name)}" value="([^"]*)">', html)
    assert found, f"the page has no hidden {name} field"
    return unescape(found.group(1))


class Browser:
    """One browser: ``await shopper.submit("/login", {...})`` loads the form's page, then
    posts the form with its CSRF token, without following the redirect."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=10)

    async def __aenter__(self) -> Browser:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.http.aclose()

    async def get(self, path: str, **options: object) -> httpx.Response:
        return await self.http.get(path, **options)  # type: ignore[arg-type]

    async def submit(
        self, page: str, data: Mapping[str, str], *, action: str | None = None
    ) -> httpx.Response:
        """Post ``data`` to ``action`` (default ``page``) with the token ``page`` shows."""
        shown = await self.http.get(page)
        assert shown.status_code == 200, shown.text
        return await self.http.post(
            action or page.split("?")[0], data={**data, "csrf_token": csrf_token(shown.text)}
        )

    async def sign_up(self, username: str | None = None, password: str = PASSWORD) -> str:
        """Register a new customer through the sign-up form, which signs them in; their
        username."""
        username = username or f"shopper{uuid.uuid4().hex[:10]}"
        answer = await self.submit(
            "/register",
            {"username": username, "email": f"{username}@example.com", "password": password},
        )
        assert (answer.status_code, answer.headers.get("location")) == (303, "/"), answer.text
        return username

    async def sign_in(self, username: str, password: str) -> httpx.Response:
        answer = await self.submit("/login", {"username": username, "password": password})
        assert answer.status_code == 303, answer.text
        return answer


class _Forms(HTMLParser):
    """Every form of a page: its action and the fields a browser would send."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, dict[str, str]]] = []
        self._textarea: str | None = None
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {key: value or "" for key, value in attrs}
        name = found.get("name")
        if tag == "form":
            self.forms.append((found.get("action", ""), {}))
        elif not self.forms:
            return
        elif tag == "input" and name and found.get("type") not in {"submit", "button"}:
            if found.get("type") not in {"checkbox", "radio"} or "checked" in found:
                self.forms[-1][1][name] = found.get("value", "")
        elif tag == "textarea" and name:
            self._textarea = name
            self.forms[-1][1][name] = ""
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select:
            fields = self.forms[-1][1]
            if self._select not in fields or "selected" in found:
                fields[self._select] = found.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea" and self._textarea:
            fields = self.forms[-1][1]  # a browser drops the line break that opens the text
            fields[self._textarea] = fields[self._textarea].removeprefix("\n")
            self._textarea = None
        elif tag == "select":
            self._select = None

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.forms[-1][1][self._textarea] += data


def form_fields(html: str, action: str) -> dict[str, str]:
    """The fields the form posting to ``action`` sends as the page filled them in."""
    parser = _Forms()
    parser.feed(html)
    for form_action, fields in parser.forms:
        if form_action == action:
            return fields
    raise AssertionError(f"the page has no form posting to {action}")


async def fill(
    browser: Browser, page: str, changes: Mapping[str, str], *, action: str | None = None
) -> httpx.Response:
    """Load ``page`` and post its form to ``action`` (default ``page``) as a browser does:
    every field as the page filled it in (hidden ones and the CSRF token too), ``changes``
    typed over them."""
    target = action or page.split("?")[0]
    shown = await browser.get(page)
    assert shown.status_code == 200, shown.text
    return await browser.http.post(target, data={**form_fields(shown.text, target), **changes})


class Stockroom:
    """The catalogue through the API as the administrator, for tests that need products of
    their own. It signs in once, and again only near the token's expiry: logins are rate
    limited per username."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._token: tuple[str, float] | None = None

    async def _authorization(self, http: httpx.AsyncClient) -> dict[str, str]:
        if self._token is None or time.monotonic() > self._token[1]:
            answer = await http.post(
                "/api/v1/auth/login", json={"username": ADMIN, "password": ADMIN_PASSWORD}
            )
            assert answer.status_code == 200, answer.text
            tokens = answer.json()
            self._token = (tokens["access_token"], time.monotonic() + tokens["expires_in"] - 60)
        return {"Authorization": f"Bearer {self._token[0]}"}

    async def add(self, *, stock: int = 10, **fields: Any) -> dict[str, Any]:
        """A new product (the API's fields; a unique sku and name unless given)."""
        sku = f"SKU-{uuid.uuid4().hex[:12]}"
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as http:
            answer = await http.post(
                "/api/v1/products",
                json={"sku": sku, "name": f"Item {sku}", "price": "9.99", "stock": stock, **fields},
                headers=await self._authorization(http),
            )
        assert answer.status_code == 201, answer.text
        product: dict[str, Any] = answer.json()
        return product


def field_error(html: str, name: str) -> str | None:
    """The error a page shows next to the form field ``name`` (None: none)."""
    found = re.search(rf'<p class="error" id="f-{re.escape(name)}-error">([^<]*)</p>', html)
    return unescape(found.group(1)) if found else None


async def can_sign_in(base_url: str, username: str, password: str) -> bool:
    """Whether the sign-in form accepts ``username`` and ``password`` (in a new browser)."""
    async with Browser(base_url) as other:
        answer = await other.submit("/login", {"username": username, "password": password})
        return answer.status_code == 303


async def reset_with(browser: Browser, link: str, new_password: str) -> httpx.Response:
    """Open a mailed reset ``link`` and post its form (whose hidden field holds the token)."""
    page = await browser.get(link)
    assert page.status_code == 200, page.text
    found = re.search(r'name="token" value="([^"]*)"', page.text)
    assert found, "the reset form carries no token"
    data = {"token": unescape(found.group(1)), "new_password": new_password}
    return await browser.http.post("/reset", data={**data, "csrf_token": csrf_token(page.text)})
