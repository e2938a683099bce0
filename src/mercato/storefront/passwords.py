"""A forgotten password: ask for a link (``GET|POST /forgot``) and set a new password with
it (``GET /reset?token=``, ``POST /reset``).

The mailed link (``{PUBLIC_URL}/reset?token=...``, :func:`mercato.auth.domain.reset_link`)
opens the reset form, which carries the token in a hidden field; the auth service checks
it (single use, expiring) only when the form is posted. The forgot form answers the same
page whether or not an account has the address, as the API does.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from mercato.storefront.accounts import Problems, refused
from mercato.storefront.web import AnyVisit, CheckedForm, Visit, redirect, render, text

router = APIRouter()


@router.get("/forgot")
async def forgot_page(visit: AnyVisit) -> Response:
    return await render(visit, "forgot.html", {"email": "", "problems": Problems()})


@router.post("/forgot")
async def forgot(visit: AnyVisit, form: CheckedForm) -> Response:
    email = text(form, "email").strip()
    answer = await visit.call("POST", "/auth/password/forgot", json_body={"email": email})
    if answer.ok:
        return await render(visit, "forgot.html", {"sent": True}, status=202)
    problems = Problems.of(answer, ("email",))
    if answer.status == 429:
        problems.alert = "Too many reset requests. Wait a while before asking again."
    return await refused(visit, "forgot.html", problems, {"email": email})


@router.get("/reset")
async def reset_page(visit: AnyVisit, token: str = "") -> Response:
    if not token:
        return await _invalid_link(visit)
    return await render(visit, "reset.html", {"token": token, "problems": Problems()})


@router.post("/reset")
async def reset(visit: AnyVisit, form: CheckedForm) -> Response:
    token = text(form, "token")
    if not token:
        return await _invalid_link(visit)
    answer = await visit.call(
        "POST",
        "/auth/password/reset",
        json_body={"token": token, "new_password": text(form, "new_password")},
    )
    if answer.ok:
        # Every session of the account was ended by the reset; if this browser held one,
        # it ends here too rather than at its next refresh.
        if visit.user is not None:
            visit.sign_out()
        visit.flash("Password changed, sign in with your new password.")
        return await redirect(visit, "/login")
    if answer.status == 400 or "token" in answer.field_errors():
        return await _invalid_link(visit)
    problems = Problems.of(answer, ("new_password",))
    return await refused(visit, "reset.html", problems, {"token": token})


async def _invalid_link(visit: Visit) -> Response:
    return await render(visit, "reset.html", {"invalid": True}, status=400)
