"""Accounts: signing up (``GET|POST /register``), the profile (``GET|POST /account``) and
the password change (``POST /account/password``).

Every form posts to the API as it is (the API's validation is the only one, shown next to
the fields), except what a form cannot say in JSON: the age field's text becomes an integer
or ``null`` here, and text that is no number is refused before any call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from fastapi import APIRouter
from starlette.datastructures import FormData
from starlette.responses import Response

from mercato.storefront.api import ApiAnswer
from mercato.storefront.signin import start_session
from mercato.storefront.web import (
    AnyVisit,
    CheckedForm,
    SignedInVisit,
    Visit,
    redirect,
    render,
    text,
)

router = APIRouter()

#: An age as a form sends it: a few digits (the API checks the range).
_WHOLE_NUMBER: Final = re.compile(r"-?[0-9]{1,9}")
NOT_A_NUMBER: Final = "Enter your age as a whole number, like 42."
CHECK_FIELDS: Final = "Check the fields marked below."
WRONG_PASSWORD: Final = "This is not your current password."  # noqa: S105 - a message


@dataclass(slots=True)
class Problems:
    """What a refused form shows: an error next to each field, a summary, its status."""

    fields: dict[str, str] = field(default_factory=dict)
    alert: str = ""
    status: int = 422
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, answer: ApiAnswer, shown: tuple[str, ...]) -> Problems:
        """The API's refusal, for a form showing the fields ``shown``: a 422's errors next
        to their fields (the others in the summary), a 409 next to the field it names, a
        429 with its ``Retry-After``."""
        if answer.status == 422:
            errors = answer.field_errors()
            fields = {name: msg for name, msg in errors.items() if name in shown}
            others = [msg for name, msg in errors.items() if name not in shown]
            return cls(fields, " ".join(others) or CHECK_FIELDS)
        if answer.status == 429:
            retry_after = answer.headers.get("Retry-After", "60")
            return cls(
                alert="Too many attempts. Wait a while and try again.",
                status=429,
                headers={"Retry-After": retry_after},
            )
        problem = cls(alert=answer.detail or "This could not be done.", status=answer.status)
        named = answer.body.get("field") if isinstance(answer.body, dict) else None
        if named in shown:
            problem.fields[named] = problem.alert
        return problem


async def refused(
    visit: Visit, template: str, problems: Problems, context: Mapping[str, Any]
) -> Response:
    """The form's page again, showing ``problems`` (with their status and headers)."""
    return await render(
        visit,
        template,
        {**context, "problems": problems},
        status=problems.status,
        headers=problems.headers,
    )


def age_of(value: str) -> int | None:
    """The age a form field holds: ``None`` when empty; :class:`ValueError` when not a
    whole number."""
    if not value:
        return None
    if not _WHOLE_NUMBER.fullmatch(value):
        raise ValueError(NOT_A_NUMBER)
    return int(value)


def stripped(form: FormData, *names: str) -> dict[str, str]:
    return {name: text(form, name).strip() for name in names}


# --- sign-up ----------------------------------------------------------------------------

REGISTER_FIELDS: Final = ("username", "email", "password", "full_name", "age")


@router.get("/register")
async def register_page(visit: AnyVisit) -> Response:
    if visit.user is not None:
        return await redirect(visit, "/account")
    return await render(visit, "register.html", {"values": {}, "problems": Problems()})


@router.post("/register")
async def register(visit: AnyVisit, form: CheckedForm) -> Response:
    values = stripped(form, "username", "email", "full_name", "age")
    password = text(form, "password")
    body: dict[str, Any] = {
        "username": values["username"],
        "email": values["email"],
        "password": password,
    }
    if values["full_name"]:
        body["full_name"] = values["full_name"]
    try:
        if (age := age_of(values["age"])) is not None:
            body["age"] = age
    except ValueError as wrong:
        problems = Problems({"age": str(wrong)}, CHECK_FIELDS)
    else:
        answer = await visit.call("POST", "/auth/register", json_body=body)
        if answer.ok:
            return await _welcome(visit, values["username"], password)
        problems = Problems.of(answer, REGISTER_FIELDS)
    return await refused(visit, "register.html", problems, {"values": values})


async def _welcome(visit: Visit, username: str, password: str) -> Response:
    """Sign the new user in, as the sign-in form would; if the login is refused (its rate
    limit), the account exists all the same: off to the sign-in form."""
    if (await start_session(visit, username, password)).ok:
        visit.flash(f"Welcome to Mercato, {username}! Your account is ready.")
        return await redirect(visit, "/")
    visit.flash("Your account is ready. Sign in with your new password.")
    return await redirect(visit, "/login")


# --- the profile and the password -------------------------------------------------------

PROFILE_FIELDS: Final = ("full_name", "age")
PASSWORD_FIELDS: Final = ("current_password", "new_password")


@router.get("/account")
async def account_page(visit: SignedInVisit) -> Response:
    return await _account(visit)


@router.post("/account")
async def update_account(form: CheckedForm, visit: SignedInVisit) -> Response:
    values = stripped(form, *PROFILE_FIELDS)
    try:
        age = age_of(values["age"])
    except ValueError as wrong:
        return await _account(visit, values, Problems({"age": str(wrong)}, CHECK_FIELDS))
    # What the form shows is what is kept: an emptied field clears the value.
    patch = {"full_name": values["full_name"] or None, "age": age}
    answer = await visit.call("PATCH", "/users/me", json_body=patch)
    if answer.ok:
        visit.flash("Your profile was saved.")
        return await redirect(visit, "/account")
    problems = Problems.of(answer, PROFILE_FIELDS)
    if answer.status == 404:
        problems.alert = "Your profile is still being set up. Try again in a moment."
    return await _account(visit, values, problems)


@router.post("/account/password")
async def change_password(form: CheckedForm, visit: SignedInVisit) -> Response:
    body = {name: text(form, name) for name in PASSWORD_FIELDS}
    answer = await visit.call("POST", "/auth/password/change", json_body=body)
    if answer.ok:
        # The API ends every other session of the account; this one (its access token
        # names its refresh-token family) goes on.
        visit.flash("Your password was changed. Your other sessions were signed out.")
        return await redirect(visit, "/account")
    problems = Problems.of(answer, PASSWORD_FIELDS)
    if answer.status == 400:
        problems.fields["current_password"], problems.alert = WRONG_PASSWORD, CHECK_FIELDS
    return await _account(visit, password_problems=problems)


async def _account(
    visit: Visit,
    values: dict[str, str] | None = None,
    problems: Problems | None = None,
    *,
    password_problems: Problems | None = None,
) -> Response:
    """The account page: the profile (``values`` as posted, else as stored) and the
    password form, with the problems of the form that was refused."""
    answer = await visit.call("GET", "/users/me")
    profile = answer.body if answer.ok else None  # 404: made within a second of sign-up
    if values is None and profile is not None:
        values = {name: _shown(profile.get(name)) for name in PROFILE_FIELDS}
    shown = problems or password_problems
    return await render(
        visit,
        "account.html",
        {
            "profile": profile,
            "values": values or {},
            "problems": problems or Problems(),
            "password_problems": password_problems or Problems(),
        },
        status=shown.status if shown else 200,
        headers=shown.headers if shown else None,
    )


def _shown(value: object) -> str:
    return "" if value is None else str(value)
