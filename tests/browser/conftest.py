"""The storefront in headless Chromium: one `mercato up` with an administrator and a small
catalogue, one browser for the session, a fresh context (cookies, storage) for each test.

Without the system Chromium these tests skip, naming it; with ``CI=true`` they fail.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from support.browser import (
    ARTIFACTS,
    CATEGORY,
    CHROMIUM,
    CHROMIUM_ARGS,
    MARKUP_NAME,
    Customer,
    ShopApi,
    Watch,
    watch,
)
from support.processes import RunningMercato, free_ports, mercato_up
from support.servers import missing
from support.storefront import ADMIN, ADMIN_PASSWORD, SHOP_ENV

expect.set_options(timeout=10_000)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()
WATCHED = pytest.StashKey[Watch]()


@pytest.fixture(scope="session")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMercato]:
    with mercato_up(tmp_path_factory.mktemp("shop"), free_ports(), env=SHOP_ENV) as running:
        yield running


@pytest.fixture(scope="session")
def api(shop: RunningMercato) -> Iterator[ShopApi]:
    client = ShopApi(shop.base_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def catalogue(api: ShopApi) -> dict[str, dict[str, Any]]:
    """A few products of their own category (``CATEGORY``) by name, one named with markup
    (which sorts it first in the whole catalogue, next to the shop's demo products)."""
    token = api.token(ADMIN, ADMIN_PASSWORD)
    wares = [
        ("Desk lamp", "19.90", 12, "A lamp with a linen shade."),
        ("Espresso cup", "7.50", 40, "Porcelain, 80 ml."),
        (MARKUP_NAME, "12.00", 5, "A mug whose name is <em>markup</em>."),
        (
            "Notebook with a long name that has to wrap on a narrow phone screen",
            "4.25",
            0,
            "Out of stock on purpose.",
        ),
    ]
    return {
        name: api.product(
            token,
            sku=f"SKU-{index}",
            name=name,
            price=str(Decimal(price)),
            category=CATEGORY,
            stock=stock,
            description=description,
        )
        for index, (name, price, stock, description) in enumerate(wares)
    }


@pytest.fixture
def customer(api: ShopApi) -> Customer:
    """A customer of their own for each test (registered through the API)."""
    return api.customer()


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    for stale in ARTIFACTS.glob("failed-*.png"):  # from an earlier run
        stale.unlink()
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
    yield chromium
    chromium.close()


@pytest.fixture
def page(request: pytest.FixtureRequest, browser: Browser, shop: RunningMercato) -> Iterator[Page]:
    """A tab in a fresh context (no cookies) on the shop. The test fails if a page of it
    breaks the CSP, throws, or opens an alert (markup run as script would); a failing test
    leaves a screenshot of where it was. Its questions are in ``asked``."""
    with _tab(request, browser, shop, javascript=True) as tab:
        yield tab


@pytest.fixture
def page_without_javascript(
    request: pytest.FixtureRequest, browser: Browser, shop: RunningMercato
) -> Iterator[Page]:
    """As ``page``, in a browser with JavaScript turned off."""
    with _tab(request, browser, shop, javascript=False) as tab:
        yield tab


@contextmanager
def _tab(
    request: pytest.FixtureRequest, browser: Browser, shop: RunningMercato, *, javascript: bool
) -> Iterator[Page]:
    context = browser.new_context(
        base_url=shop.base_url,
        viewport={"width": 1280, "height": 800},
        java_script_enabled=javascript,
    )
    context.set_default_timeout(10_000)
    tab = context.new_page()
    seen = request.node.stash[WATCHED] = watch(tab)
    yield tab
    if request.node.stash.get(_FAILED, False):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=ARTIFACTS / f"failed-{request.node.name}.png", full_page=True)
    context.close()
    assert seen.troubles == []


@pytest.fixture
def blank(browser: Browser) -> Iterator[Page]:
    """A tab 375 px wide on no site, for pages a test writes itself."""
    context = browser.new_context(viewport={"width": 375, "height": 800})
    yield context.new_page()
    context.close()


@pytest.fixture
def asked(request: pytest.FixtureRequest, page: Page) -> list[str]:
    """The questions (``confirm``) the test's pages asked, each answered yes."""
    return request.node.stash[WATCHED].asked


@pytest.fixture
def other_site() -> Iterator[Callable[[str], str]]:
    """Serve a page from another site (``localhost``, while the shop is ``127.0.0.1``):
    ``url = other_site(html)``."""
    pages: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def serve(html: str) -> str:
        path = f"/page{len(pages)}.html"
        pages[path] = html.encode()
        return f"http://localhost:{server.server_address[1]}{path}"

    yield serve
    server.shutdown()
    server.server_close()
    thread.join()
