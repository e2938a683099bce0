"""CSRF: every state-changing form the storefront shows (found by crawling it as a visitor
and as an administrator) is refused with 403, and changes nothing, when it comes without
a token, with a forged one, with another session's, or from a browser with no session at
all (ASVS V3 web frontend: cross-site request forgery; V7 session management)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from urllib.parse import urlencode

import httpx
import pytest

from support.processes import RunningMercato
from support.security_web import Form, admin_token, crawl
from support.storefront import ADMIN, ADMIN_PASSWORD, Browser, csrf_token

pytest_plugins = ["support.security_web_plugin"]
pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

FORM = "application/x-www-form-urlencoded"
TOKENS = ("missing", "forged", "another session's", "no session")
#: What a form's empty fields are filled with: values that would succeed, so that a form
#: that wrongly accepted the post would visibly act (sign in, create, change).
FILL = {
    "username": ADMIN,
    "password": ADMIN_PASSWORD,
    "current_password": ADMIN_PASSWORD,
    "new_password": "Csrf-Changed-Pass-1",
    "email": "csrf@example.com",
    "full_name": "Csrf Victim",
    "age": "30",
    "quantity": "1",
    "name": "Csrf product",
    "price": "1.00",
    "stock": "1",
    "category": "general",
    "description": "made by a forged form",
}


def filled(form: Form) -> dict[str, str]:
    data = {name: value or FILL.get(name, "x") for name, value in form.fields.items()}
    data.pop("csrf_token", None)
    if "sku" in data:
        data["sku"] = f"CSRF-{uuid.uuid4().hex[:8]}"
    return data


async def forged_post(
    running: RunningMercato, browser: Browser, form: Form, token: str
) -> httpx.Response:
    data = filled(form)
    if token == "forged":
        data["csrf_token"] = "ImZvcmdlZCI.ZzZzZw.forged-signature"
    elif token == "another session's":
        async with Browser(running.base_url) as other:
            data["csrf_token"] = csrf_token((await other.get("/login")).text)
    # URL-encoded as a browser sends a form, even an empty one (httpx sends no body for {}).
    body, headers = urlencode(data), {"Content-Type": FORM}
    if token == "no session":
        async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as stranger:
            return await stranger.post(form.action, content=body, headers=headers)
    return await browser.http.post(form.action, content=body, headers=headers)


def state(running: RunningMercato, token: str) -> Mapping[str, object]:
    """What a forged form could change, as the API shows it."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=f"{running.base_url}/api/v1", timeout=30) as api:
        products = api.get("/products", params={"limit": 100, "sort": "created_at"}).json()
        orders = api.get("/orders", params={"all": "true"}, headers=headers).json()
        profile = api.get("/users/me", headers=headers).json()
    return {"products": products, "orders": orders["total"], "profile": profile}


def refused(answer: httpx.Response, token: str) -> bool:
    """403 and no redirect; or, for a stranger without a session at a form that needs a
    signed-in user, the way to the sign-in page (which comes before the token check)."""
    if answer.status_code == 403:
        return "location" not in answer.headers
    location = answer.headers.get("location", "")
    return token == "no session" and answer.status_code == 303 and location.startswith("/login")


async def refusals(running: RunningMercato, browser: Browser, forms: list[Form]) -> dict[str, str]:
    """Each (form, token) whose forged post was not a 403 that left the session alone."""
    wrong = {}
    for form in forms:
        for token in TOKENS:
            cookies_before = dict(browser.http.cookies)
            answer = await forged_post(running, browser, form, token)
            problems = []
            if not refused(answer, token):
                problems.append(f"status {answer.status_code} {answer.headers.get('location')}")
            if "set-cookie" in answer.headers:
                problems.append("it set a cookie")
            if dict(browser.http.cookies) != cookies_before:
                problems.append("the session changed")
            if problems:
                wrong[f"{form.action} ({token}, shown on {form.page})"] = ", ".join(problems)
    return wrong


@pytest.mark.parametrize(
    ("who", "start", "a_form"),
    [
        ("visitor", ["/", "/login"], "/login"),
        ("administrator", ["/", "/admin/products"], "/logout"),
    ],
)
async def test_every_form_refuses_a_post_without_this_sessions_token(
    web_shop: RunningMercato, who: str, start: list[str], a_form: str
) -> None:
    token = admin_token(web_shop)
    before = state(web_shop, token)
    async with Browser(web_shop.base_url) as browser:
        if who == "administrator":
            await browser.sign_in(ADMIN, ADMIN_PASSWORD)
        forms = (await crawl(browser.http, start)).post_forms()

        wrong = await refusals(web_shop, browser, forms)

        # Neither did the forged sign-ins sign the visitor in, nor the sign-outs the admin out.
        assert (ADMIN in (await browser.get("/")).text) is (who == "administrator")
    assert a_form in {form.action for form in forms}
    assert wrong == {}
    assert state(web_shop, token) == before


async def test_no_state_changing_form_acts_on_a_get(web_shop: RunningMercato) -> None:
    """An ``<img src>`` on another site sends a GET with the cookie (SameSite=Lax lets a
    top-level GET through): no form's action may act on one (ASVS V3.5.3)."""
    token = admin_token(web_shop)
    before = state(web_shop, token)
    async with Browser(web_shop.base_url) as admin:
        await admin.sign_in(ADMIN, ADMIN_PASSWORD)
        forms = (await crawl(admin.http, ["/", "/admin/products"])).post_forms()

        answers = {form.action: await admin.get(form.action, params=filled(form)) for form in forms}

        assert ADMIN in (await admin.get("/")).text  # GET /logout did not sign out
    assert "/logout" in answers
    assert answers["/logout"].status_code == 405
    assert state(web_shop, token) == before
