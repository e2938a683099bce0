"""A browser without JavaScript for the storefront's HTTP tests: an httpx client with a
cookie jar that fills in the CSRF token of the form it was shown, as a browser would."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from html import unescape

import httpx

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

#: The administrator every storefront test run bootstraps (MERCATO_ADMIN_*).
ADMIN, ADMIN_PASSWORD = "shopadmin", "Shop-Admin-Pass-42"
PASSWORD = "Correct-Horse-9"


def csrf_token(html: str) -> str:
    """The first CSRF token on a page (every form of a page carries the same one)."""
    found = _CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
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
