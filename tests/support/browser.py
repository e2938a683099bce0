"""A real browser for the storefront's browser tests: headless system Chromium driven by
Playwright, the pages' usability checks (375 px and 1280 px wide), screenshots, and the
shop's data made through the API.

Never a downloaded browser: ``CHROMIUM`` (default ``/usr/bin/chromium``, Debian's
``chromium`` package) is launched with the flags it needs as root on a closed network.
"""

from __future__ import annotations

import email
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from email import policy
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import ConsoleMessage, Dialog, Page, expect

from support.storefront import PASSWORD

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = (
    "--no-sandbox",  # root in a container has no user namespace for the sandbox
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
#: A phone and a laptop: every page must be usable at both.
WIDTHS = (375, 1280)
ARTIFACTS = Path(
    os.environ.get("MERCATO_SCREENSHOTS", Path(__file__).parent.parent / "browser" / "artifacts")
)

#: A product whose name is markup: every page must show it as text.
MARKUP_NAME = '<img src=x onerror="alert(1)"> Bold <b>mug</b>'
#: The category of the tests' own products (the shop also has its demo catalogue).
CATEGORY = "studio"

# What makes a page unusable, found in the page itself: sideways scrolling, a field without
# a label, headings out of order (exactly one h1, never a level skipped on the way down).
_PROBLEMS = """() => {
  const problems = [];
  const width = document.documentElement.scrollWidth;
  if (width > window.innerWidth) {
    problems.push(`scrolls sideways: ${width}px of content in a ${window.innerWidth}px window`);
  }
  const buttons = new Set(["hidden", "submit", "button", "reset", "image"]);
  for (const field of document.querySelectorAll("input, select, textarea")) {
    if (!buttons.has(field.type) && field.labels.length === 0) {
      problems.push(`a field without a label: ${field.outerHTML}`);
    }
  }
  const levels = [...document.querySelectorAll("h1, h2, h3, h4, h5, h6")]
    .map((heading) => [Number(heading.tagName[1]), heading.textContent.trim()]);
  const h1s = levels.filter(([level]) => level === 1).length;
  if (h1s !== 1) problems.push(`${h1s} h1 headings, not one`);
  let previous = 0;
  for (const [level, text] of levels) {
    if (level > previous + 1) problems.push(`h${level} "${text}" comes after h${previous}`);
    previous = level;
  }
  return problems;
}"""


def usability_problems(page: Page) -> list[str]:
    problems: list[str] = page.evaluate(_PROBLEMS)
    return problems


@dataclass
class Watch:
    """What a page did besides showing itself: ``troubles`` are what fails a test (a breach
    of the CSP, an uncaught script error, an alert, which only markup run as script opens
    here); ``asked`` are the questions it asked (``confirm``), each answered yes, as the
    person who clicked would."""

    troubles: list[str] = field(default_factory=list)
    asked: list[str] = field(default_factory=list)


def watch(page: Page) -> Watch:
    """Watch ``page`` from now on."""
    seen = Watch()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            seen.troubles.append(f"{page.url}: {message.text}")

    def on_dialog(dialog: Dialog) -> None:
        if dialog.type == "confirm":
            seen.asked.append(dialog.message)
            dialog.accept()
        else:
            seen.troubles.append(f"{page.url}: a {dialog.type} dialog: {dialog.message}")
            dialog.dismiss()

    page.on("console", on_console)
    page.on("dialog", on_dialog)
    page.on("pageerror", lambda error: seen.troubles.append(f"{page.url}: {error}"))
    return seen


def shoot(page: Page, name: str) -> list[Path]:
    """Check the page at each of ``WIDTHS`` and keep a full-page screenshot of each,
    ``ARTIFACTS/<name>-<width>.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shots = []
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 800})
        shot = ARTIFACTS / f"{name}-{width}.png"
        page.screenshot(path=shot, full_page=True)  # first: it shows what the check finds
        shots.append(shot)
        problems = usability_problems(page)
        assert not problems, f"{page.url} at {width} px: " + "; ".join(problems)
    page.set_viewport_size({"width": WIDTHS[-1], "height": 800})
    return shots


def sign_in(page: Page, username: str, password: str) -> None:
    page.goto("/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(signed_in_as(page, username)).to_be_visible()


def signed_in_as(page: Page, username: str) -> Any:
    """The header's link to the account of ``username`` (there when they are signed in)."""
    return page.get_by_role("navigation", name="Account").get_by_role(
        "link", name=username, exact=True
    )


def sign_out(page: Page) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("navigation", name="Account").get_by_role("link", name="Sign in"))


@dataclass(frozen=True)
class Customer:
    username: str
    email: str
    password: str


class ShopApi:
    """The shop's JSON API, for the data a test needs before its browser comes in."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=f"{base_url}/api/v1", timeout=30)

    def close(self) -> None:
        self.http.close()

    def token(self, username: str, password: str) -> str:
        answer = self.http.post("/auth/login", json={"username": username, "password": password})
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["access_token"]
        return token

    def customer(self, password: str = PASSWORD) -> Customer:
        """A newly registered customer."""
        username = f"shopper{uuid.uuid4().hex[:10]}"
        customer = Customer(username, f"{username}@example.com", password)
        answer = self.http.post(
            "/auth/register",
            json={"username": username, "email": customer.email, "password": password},
        )
        assert answer.status_code == 201, answer.text
        return customer

    def product(self, token: str, **fields: Any) -> dict[str, Any]:
        answer = self.http.post(
            "/products", json=fields, headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 201, answer.text
        product: dict[str, Any] = answer.json()
        return product

    def order(self, token: str, product_id: str, quantity: int) -> dict[str, Any]:
        answer = self.http.post(
            "/orders",
            json={"items": [{"product_id": product_id, "quantity": quantity}]},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 201, answer.text
        order: dict[str, Any] = answer.json()
        return order

    def orders(self, token: str) -> dict[str, Any]:
        answer = self.http.get("/orders", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
        orders: dict[str, Any] = answer.json()
        return orders


def mailed_link(mail_dir: Path, address: str, *, within: float = 10) -> str:
    """The reset link of the last mail to ``address`` in the outbox, once it is there."""
    deadline = time.monotonic() + within
    while True:
        links = []
        for path in sorted(mail_dir.glob("*.eml"), key=lambda p: p.stat().st_mtime):
            message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
            if address in str(message["To"]):
                body = message.get_body(("plain",))  # type: ignore[attr-defined]
                links += re.findall(r"http\S+/reset\?token=\S+", body.get_content())
        if links:
            return links[-1]
        assert time.monotonic() < deadline, f"no reset link mailed to {address} in {mail_dir}"
        time.sleep(0.1)
