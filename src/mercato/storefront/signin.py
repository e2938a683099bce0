"""Signing in and out: ``GET|POST /login`` and ``POST /logout``.

Signing in starts a new session (a new id, a new CSRF secret) holding the user's tokens;
signing out revokes the refresh-token family at the auth service and deletes the session.
"""

from __future__ import annotations

import time

import structlog
from fastapi import APIRouter
from starlette.responses import Response

from mercato.storefront.api import ApiAnswer, ApiUnavailable
from mercato.storefront.sessions import SignedIn
from mercato.storefront.web import (
    AnyVisit,
    CheckedForm,
    Visit,
    redirect,
    render,
    safe_next,
    text,
)

router = APIRouter()
log = structlog.stdlib.get_logger("mercato.storefront")


@router.get("/login")
async def login_page(visit: AnyVisit, next: str | None = None) -> Response:
    if visit.user is not None:
        return await redirect(visit, safe_next(next))
    return await render(visit, "login.html", {"next": safe_next(next), "username": ""})


async def start_session(visit: Visit, username: str, password: str) -> ApiAnswer:
    """Log in at the auth service and, when it accepts, sign ``visit`` in as that user (a
    new session holding the tokens); the login's answer either way."""
    answer = await visit.call(
        "POST", "/auth/login", json_body={"username": username, "password": password}
    )
    if not answer.ok:
        return answer
    tokens = answer.body
    me = await visit.storefront.api.call(
        visit.request, "GET", "/auth/me", token=tokens["access_token"]
    )
    if not me.ok:
        raise ApiUnavailable("auth")
    visit.sign_in(
        SignedIn(
            user_id=me.body["id"],
            username=me.body["username"],
            roles=tuple(me.body["roles"]),
            access_token=tokens["access_token"],
            refresh_token=tokens["refresh_token"],
            access_expires_at=time.time() + float(tokens["expires_in"]),
        )
    )
    return answer


@router.post("/login")
async def login(visit: AnyVisit, form: CheckedForm) -> Response:
    username, password = text(form, "username"), text(form, "password")
    next_path = safe_next(text(form, "next"))
    answer = await start_session(visit, username, password)
    if answer.ok:
        return await redirect(visit, next_path)
    headers = {}
    if answer.status == 429:
        error = "Too many sign-in attempts. Wait a minute and try again."
        headers["Retry-After"] = answer.headers.get("Retry-After", "60")
    elif answer.status == 422:
        error = "Enter your username and password."
    else:
        error = "Wrong username or password."
    return await render(
        visit,
        "login.html",
        {"error": error, "username": username, "next": next_path},
        status=answer.status if answer.status in (401, 422, 429) else 401,
        headers=headers,
    )


@router.post("/logout")
async def logout(visit: AnyVisit, _form: CheckedForm) -> Response:
    if visit.user is not None:
        try:
            await visit.call(
                "POST", "/auth/logout", json_body={"refresh_token": visit.user.refresh_token}
            )
        except ApiUnavailable:  # the session still dies here; the tokens expire on their own
            log.warning("storefront_logout_not_revoked", user_id=visit.user.user_id)
    visit.sign_out()
    return await redirect(visit, "/")
