"""Open redirects: whatever ``next`` a link to the sign-in page carries, signing in (or
visiting it signed in) never sends the browser to another site (ASVS V3 web frontend:
unvalidated redirects; OWASP API8)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlencode, urljoin, urlsplit

import pytest

from support.processes import RunningMercato
from support.storefront import ADMIN, ADMIN_PASSWORD, Browser

pytest_plugins = ["support.security_web_plugin"]
pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

OFF_SITE = (
    "//evil.example",
    "https://evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "\\/evil.example",
    "///evil.example",
    "/\t/evil.example",
    "https:evil.example",
    "javascript:alert(1)",
    " //evil.example",
)


def stays_here(location: str, base_url: str) -> bool:
    """Whether a browser following ``location`` stays on ``base_url``'s site: a path from
    the root, with nothing a browser reads as a host (it treats ``\\`` as ``/`` and drops
    tabs and newlines)."""
    cleaned = location.replace("\\", "/").translate({9: None, 10: None, 13: None})
    if not cleaned.startswith("/") or cleaned.startswith("//"):
        return False
    return urlsplit(urljoin(base_url + "/", cleaned)).netloc == urlsplit(base_url).netloc


@pytest.fixture
async def visitor(web_shop: RunningMercato) -> AsyncIterator[Browser]:
    async with Browser(web_shop.base_url) as browser:
        yield browser


@pytest.mark.parametrize("target", OFF_SITE)
async def test_signing_in_never_redirects_off_site(
    web_shop: RunningMercato, visitor: Browser, target: str
) -> None:
    page = await visitor.get("/login", params={"next": target})
    assert page.status_code == 200
    assert "evil.example" not in page.text  # the form does not carry it on either

    answer = await visitor.submit(
        f"/login?{urlencode({'next': target})}",
        {"username": ADMIN, "password": ADMIN_PASSWORD, "next": target},
        action="/login",
    )

    assert answer.status_code == 303
    assert stays_here(answer.headers["location"], web_shop.base_url), answer.headers["location"]


@pytest.mark.parametrize("target", OFF_SITE)
async def test_the_sign_in_page_of_a_signed_in_user_never_redirects_off_site(
    web_shop: RunningMercato, visitor: Browser, target: str
) -> None:
    await visitor.sign_in(ADMIN, ADMIN_PASSWORD)

    answer = await visitor.get("/login", params={"next": target})

    assert answer.status_code == 303
    assert stays_here(answer.headers["location"], web_shop.base_url), answer.headers["location"]


async def test_a_local_next_is_followed(web_shop: RunningMercato, visitor: Browser) -> None:
    answer = await visitor.submit(
        "/login?next=/?page=2",
        {"username": ADMIN, "password": ADMIN_PASSWORD, "next": "/?page=2"},
        action="/login",
    )

    assert answer.headers["location"] == "/?page=2"
