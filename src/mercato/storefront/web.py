"""What every page shares: the visit (session, user, CSRF), rendering, and the errors a
page answers with.

A route takes a :class:`Visit` (``Depends(current_visit)``, or :func:`signed_in` /
:func:`administrator` for pages that need one) and answers with :func:`render` or
:func:`redirect`, which save the session and set its cookie. State-changing forms are read
with :func:`checked_form`, which answers 403 unless the form carries this session's CSRF
token. Errors are raised (:class:`PageError`, :class:`SignInRequired`,
:class:`~.api.ApiUnavailable`) and rendered as HTML by :func:`install_page_errors`.
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final
from urllib.parse import parse_qsl, quote

from fastapi import Depends, FastAPI
from jinja2 import Environment, PackageLoader, select_autoescape
from redis.exceptions import RedisError
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from mercato.storefront.api import ApiAnswer, ApiClient, ApiUnavailable
from mercato.storefront.csrf import FIELD as CSRF_FIELD
from mercato.storefront.csrf import CsrfTokens
from mercato.storefront.sessions import Session, SessionStore, SignedIn

TEMPLATES: Final = Jinja2Templates(
    env=Environment(
        loader=PackageLoader("mercato.storefront", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
)

#: The largest form body a page accepts, and its most fields (the admin's product form is
#: the largest: a description of a few KiB).
MAX_FORM_BYTES: Final = 64 * 1024
MAX_FORM_FIELDS: Final = 50


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    """``__Host-`` and ``Secure`` outside development (browsers then send the cookie only
    over HTTPS, to this host, for every path); always ``HttpOnly`` and ``SameSite=Lax``."""

    secure: bool

    @property
    def name(self) -> str:
        return "__Host-mercato-session" if self.secure else "mercato-session"


@dataclass(slots=True)
class Storefront:
    """What the pages need while the gateway runs (built in its lifespan)."""

    api: ApiClient
    sessions: SessionStore
    csrf: CsrfTokens
    cookie: CookiePolicy
    page_size: int


class PageError(Exception):
    """An answer other than the page: rendered with ``error.html``."""

    def __init__(self, status: int, title: str, message: str = "") -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.message = message


class SignInRequired(Exception):
    """A visitor asked for a page that needs a signed-in user: off to ``/login``."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


#: One refresh at a time per session in this process: two concurrent pages must not both
#: present the same refresh token (the second would look like a replay and revoke it all).
_refreshing: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()


class Visit:
    """One request's view of its browser session."""

    def __init__(self, request: Request, storefront: Storefront, session: Session | None) -> None:
        self.request = request
        self.storefront = storefront
        self.session = session or Session()
        self._stored = session is not None
        self._changed = False
        self._dropped: list[Session] = []
        self._forget = False

    @property
    def user(self) -> SignedIn | None:
        return self.session.user

    @property
    def token(self) -> str | None:
        return self.session.user.access_token if self.session.user else None

    def csrf_token(self) -> str:
        """This session's CSRF token, for a form; the session is kept from now on."""
        if not self._stored:
            self._changed = True
        return self.storefront.csrf.issue(self.session)

    def flash(self, message: str) -> None:
        self.session.flashes.append(message)
        self._changed = True

    def take_flashes(self) -> list[str]:
        messages, self.session.flashes = self.session.flashes, []
        if messages:
            self._changed = True
        return messages

    def sign_in(self, user: SignedIn) -> None:
        """A new session (new id, new CSRF secret) for ``user``; the old one is deleted."""
        if self._stored:
            self._dropped.append(self.session)
        self.session = Session(user=user)
        self._stored = False
        self._changed = True

    def sign_out(self) -> None:
        """Delete the session and its cookie."""
        if self._stored:
            self._dropped.append(self.session)
        self.session = Session()
        self._stored = False
        self._changed = False
        self._forget = True

    async def call(self, method: str, path: str, **options: Any) -> ApiAnswer:
        """One API call as this visitor (with their access token when signed in)."""
        return await self.storefront.api.call(
            self.request, method, path, token=self.token, **options
        )

    async def refresh_if_due(self) -> None:
        """Swap an access token about to expire for a new pair; a refused refresh (the
        family was revoked, by a sign-out elsewhere or a password reset) signs out."""
        user = self.session.user
        if user is None or not user.needs_refresh():
            return
        lock = _refreshing.setdefault(self.session.id, asyncio.Lock())
        async with lock:
            current = await self.storefront.sessions.load_by_id(self.session.id)
            if (
                current is not None
                and current.user is not None
                and not current.user.needs_refresh()
            ):
                self.session = current  # another request refreshed it meanwhile
                return
            answer = await self.storefront.api.call(
                self.request,
                "POST",
                "/auth/refresh",
                json_body={"refresh_token": user.refresh_token},
            )
            if answer.ok:
                self.session.user = user.with_tokens(
                    answer.body["access_token"],
                    answer.body["refresh_token"],
                    float(answer.body["expires_in"]),
                )
                await self.storefront.sessions.save(self.session)
            else:
                self.sign_out()

    async def finish(self, response: Response) -> Response:
        """Persist what changed and set (or clear) the cookie on ``response``."""
        store, cookie = self.storefront.sessions, self.storefront.cookie
        for old in self._dropped:
            await store.delete(old)
        if self._changed:
            await store.save(self.session)
            self._stored = True
            response.set_cookie(
                cookie.name,
                store.cookie_value(self.session),
                max_age=int(store.ttl),
                path="/",
                secure=cookie.secure,
                httponly=True,
                samesite="lax",
            )
        elif self._forget:
            response.delete_cookie(
                cookie.name, path="/", secure=cookie.secure, httponly=True, samesite="lax"
            )
        # Pages show one person's data: never kept by a shared cache or the back button's.
        response.headers["Cache-Control"] = "no-store"
        response.headers["Vary"] = "Cookie"
        return response


def storefront_of(request: Request) -> Storefront:
    storefront: Storefront | None = getattr(request.app.state, "storefront", None)
    if storefront is None:  # the lifespan has not run (or has ended)
        raise ApiUnavailable("storefront")
    return storefront


async def current_visit(request: Request) -> Visit:
    storefront = storefront_of(request)
    try:
        session = await storefront.sessions.load(request.cookies.get(storefront.cookie.name))
        visit = Visit(request, storefront, session)
        request.state.visit = visit
        await visit.refresh_if_due()
    except (RedisError, OSError) as down:
        raise ApiUnavailable("session store") from down
    return visit


async def signed_in(visit: Annotated[Visit, Depends(current_visit)]) -> Visit:
    if visit.user is None:
        request = visit.request
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(path if request.method == "GET" else "/")
    return visit


async def administrator(visit: Annotated[Visit, Depends(signed_in)]) -> Visit:
    if visit.user is None or not visit.user.is_admin:
        raise PageError(403, "Forbidden", "This page is for administrators.")
    return visit


async def checked_form(visit: Annotated[Visit, Depends(current_visit)]) -> FormData:
    """The posted form, if it carries this session's CSRF token; else 403, nothing done.

    Every storefront form is URL-encoded and small: another body type answers 415, a body
    over :data:`MAX_FORM_BYTES` 413, before anything is parsed."""
    form = await read_form(visit.request)
    if not visit.storefront.csrf.valid(form.get(CSRF_FIELD), visit.session):
        raise PageError(
            403,
            "Forbidden",
            "This form has expired or did not come from this site. Reload the page and try again.",
        )
    return form


async def read_form(request: Request) -> FormData:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in {"application/x-www-form-urlencoded", ""}:  # "": an empty POST
        raise PageError(415, "Unsupported form", "Forms are sent URL-encoded.")
    length = request.headers.get("content-length", "")
    if length.isdecimal() and int(length) > MAX_FORM_BYTES:
        raise PageError(413, "Form too large", f"A form holds at most {MAX_FORM_BYTES} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PageError(413, "Form too large", f"A form holds at most {MAX_FORM_BYTES} bytes.")
    try:
        fields: list[tuple[str, str | UploadFile]] = list(
            parse_qsl(
                body.decode(),
                keep_blank_values=True,
                max_num_fields=MAX_FORM_FIELDS,
                errors="strict",
            )
        )
    except (UnicodeDecodeError, ValueError) as malformed:
        raise PageError(400, "Malformed form", "The form could not be read.") from malformed
    return FormData(fields)


#: What a route takes: the visit, a signed-in visit, an administrator's, a CSRF-checked form.
#: A POST lists its ``CheckedForm`` first, so that a form without this session's token is
#: refused (403) before anything else is decided, a visitor's included.
AnyVisit = Annotated[Visit, Depends(current_visit)]
SignedInVisit = Annotated[Visit, Depends(signed_in)]
AdminVisit = Annotated[Visit, Depends(administrator)]
CheckedForm = Annotated[FormData, Depends(checked_form)]


#: What a local path to go to never holds: a backslash (browsers read it as ``/``), a space
#: or a control character (browsers drop tabs and newlines, so ``/\t/evil`` is ``//evil``).
_NOT_IN_NEXT: Final = re.compile(r"[\\\x00-\x20\x7f]")


def safe_next(value: object, default: str = "/") -> str:
    """A local path to go to after signing in: never another site (``//evil``, ``/\\evil``,
    ``/\\t/evil``), nor anything a browser would read as one."""
    if (
        isinstance(value, str)
        and value.startswith("/")
        and not value.startswith("//")
        and not _NOT_IN_NEXT.search(value)
    ):
        return value
    return default


async def render(
    visit: Visit,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    response = TEMPLATES.TemplateResponse(
        visit.request,
        template,
        {"visit": visit, **(context or {})},
        status_code=status,
        headers=dict(headers or {}),
    )
    return await visit.finish(response)


async def redirect(visit: Visit, to: str) -> Response:
    """303 See Other: after a POST, the browser GETs ``to`` (which must be a local path)."""
    return await visit.finish(RedirectResponse(safe_next(to), status_code=303))


def install_page_errors(app: FastAPI) -> None:
    """Render the storefront's errors as pages (the API's stay problem+json)."""

    def visit_of(request: Request) -> Visit:
        visit = getattr(request.state, "visit", None)
        if isinstance(visit, Visit):
            return visit
        return Visit(request, storefront_of(request), None)

    async def page_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageError)
        return await render(
            visit_of(request),
            "error.html",
            {"title": exc.title, "message": exc.message},
            status=exc.status,
        )

    async def sign_in_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        target = "/login" if exc.next_path == "/" else f"/login?next={quote(exc.next_path)}"
        return await visit_of(request).finish(RedirectResponse(target, status_code=303))

    async def unavailable(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiUnavailable)
        # Rendered without touching the session store: it may be what is down.
        visit = getattr(request.state, "visit", None)
        return TEMPLATES.TemplateResponse(
            request,
            "error.html",
            {
                "visit": visit if isinstance(visit, Visit) else None,
                "title": "Service unavailable",
                "message": "Part of the shop is not answering right now. Try again in a moment.",
            },
            status_code=503,
            headers={
                "Retry-After": str(max(1, round(exc.retry_after))),
                "Cache-Control": "no-store",
            },
        )

    app.add_exception_handler(PageError, page_error)
    app.add_exception_handler(SignInRequired, sign_in_required)
    app.add_exception_handler(ApiUnavailable, unavailable)


def text(form: FormData, name: str) -> str:
    """A form field's text ('' when missing, or when a file was posted in its place)."""
    value = form.get(name)
    return value if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class Pager:
    """Page ``number`` (from 1) of ``total`` items, ``size`` a page."""

    number: int
    size: int
    total: int

    @classmethod
    def of(cls, value: str | None, size: int) -> Pager:
        """The page a ``?page=`` asks for: anything but a positive integer is page 1."""
        number = int(value) if value and value.isdecimal() and 0 < len(value) < 7 else 1
        return cls(max(number, 1), size, 0)

    def with_total(self, total: int) -> Pager:
        return Pager(self.number, self.size, total)

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def previous(self) -> int | None:
        return self.number - 1 if self.number > 1 else None

    @property
    def next(self) -> int | None:
        return self.number + 1 if self.number < self.pages else None
