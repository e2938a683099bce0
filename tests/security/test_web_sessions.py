"""The session cookie: ``HttpOnly`` and ``SameSite=Lax`` always, ``Secure`` with the
``__Host-`` prefix outside development; a new session id at sign-in (no fixation) and the
old one dead from then on; signing out kills the session (ASVS V7 session management, V3
cookie setup)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from support.processes import RunningMercato
from support.security_web import session_cookie, set_cookies, sign_in_by_hand
from support.storefront import ADMIN, ADMIN_PASSWORD, csrf_token

pytest_plugins = ["support.security_web_plugin"]
pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


def session_id(cookie: str) -> str:
    """The session id inside a signed ``name=id.timestamp.signature`` cookie."""
    return cookie.partition("=")[2].rsplit(".", 2)[0]


async def test_the_development_cookie_is_httponly_and_samesite_lax(
    web_shop: RunningMercato,
) -> None:
    async with httpx.AsyncClient(base_url=web_shop.base_url) as client:
        cookies = set_cookies(await client.get("/login"))

    cookie = cookies["mercato-session"]
    assert cookie["httponly"] is True
    assert cookie["samesite"].lower() == "lax"
    assert cookie["path"] == "/"
    assert not cookie["secure"]  # development runs on plain http://localhost


async def test_outside_development_the_cookie_is_secure_and_host_prefixed(
    web_production: RunningMercato,
) -> None:
    async with httpx.AsyncClient(base_url=web_production.base_url) as client:
        cookies = set_cookies(await client.get("/login"))

    assert list(cookies) == ["__Host-mercato-session"]
    cookie = cookies["__Host-mercato-session"]
    assert cookie["secure"] is True
    assert cookie["httponly"] is True
    assert cookie["samesite"].lower() == "lax"
    assert cookie["path"] == "/"  # what __Host- requires, with Secure and no Domain
    assert cookie["domain"] == ""


async def test_signing_in_starts_a_new_session_and_kills_the_anonymous_one(
    web_production: RunningMercato,
) -> None:
    async with httpx.AsyncClient(base_url=web_production.base_url, timeout=30) as client:
        page = await client.get("/login")
        anonymous = session_cookie(page)
        kept = await client.get("/login", headers={"Cookie": anonymous})
        assert "set-cookie" not in kept.headers  # a live session is reused as it is

        answer = await client.post(
            "/login",
            data={
                "username": ADMIN,
                "password": ADMIN_PASSWORD,
                "csrf_token": csrf_token(page.text),
            },
            headers={"Cookie": anonymous},
        )
        signed_in = session_cookie(answer)
        replayed = await client.get("/login", headers={"Cookie": anonymous})

    assert answer.status_code == 303
    assert session_id(signed_in) != session_id(anonymous)
    # The anonymous id is gone from the store: the page starts yet another session.
    assert session_id(session_cookie(replayed)) not in (
        session_id(anonymous),
        session_id(signed_in),
    )
    assert ADMIN not in replayed.text


async def test_signing_out_kills_the_session(web_production: RunningMercato) -> None:
    async with httpx.AsyncClient(base_url=web_production.base_url, timeout=30) as client:
        signed_in = await sign_in_by_hand(client, ADMIN, ADMIN_PASSWORD)
        page = await client.get("/", headers={"Cookie": signed_in})
        assert ADMIN in page.text

        out = await client.post(
            "/logout", data={"csrf_token": csrf_token(page.text)}, headers={"Cookie": signed_in}
        )
        replayed = await client.get("/", headers={"Cookie": signed_in})

    assert out.status_code == 303
    assert (
        "Max-Age=0" in out.headers["set-cookie"] or "expires=" in out.headers["set-cookie"].lower()
    )
    assert ADMIN not in replayed.text


async def test_no_password_cookie_or_csrf_token_of_the_storefront_reaches_the_log(
    web_shop: RunningMercato,
) -> None:
    wrong_password = f"Wrong-{uuid.uuid4().hex}-9"
    async with httpx.AsyncClient(base_url=web_shop.base_url, timeout=30) as client:
        page = await client.get("/login")
        token = csrf_token(page.text)
        await client.post(
            "/login", data={"username": ADMIN, "password": wrong_password, "csrf_token": token}
        )
        await client.post("/login", data={"username": ADMIN, "password": wrong_password})  # 403
        signed_in = await client.post(
            "/login", data={"username": ADMIN, "password": ADMIN_PASSWORD, "csrf_token": token}
        )
        marker = uuid.uuid4().hex
        await client.get("/", headers={"X-Request-ID": marker})
    secrets = {
        "the wrong password": wrong_password,
        "the password": ADMIN_PASSWORD,
        "the anonymous session": session_cookie(page).partition("=")[2],
        "the signed-in session": session_cookie(signed_in).partition("=")[2],
        "the CSRF token": token,
    }

    assert web_shop.log_lines_with(marker, services={"gateway"})  # the log has caught up
    log = web_shop.log()
    assert [name for name, secret in secrets.items() if secret in log] == []
