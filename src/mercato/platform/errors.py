"""Errors as RFC 9457 problem details (``application/problem+json``).

Domain code raises an :class:`AppError` subclass that carries its status and title; one set
of handlers renders every error, including validation errors, unknown routes and dependency
outages, the same way, through the one renderer :func:`problem_details` (which code that
answers a problem outside a handler uses too). Nothing internal (stack trace, SQL, host
name) leaves the process outside ``development``.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from http import HTTPStatus
from types import TracebackType
from typing import Any, ClassVar, Final, Literal

import aiohttp
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from limits.errors import StorageError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError as RedisReadOnlyError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

PROBLEM_JSON = "application/problem+json"
log = structlog.stdlib.get_logger("mercato.errors")


class AppError(Exception):
    """Base of every error a service answers on purpose."""

    status: ClassVar[int] = 400
    title: ClassVar[str] = "Bad Request"
    slug: ClassVar[str | None] = None
    headers: ClassVar[Mapping[str, str]] = {}

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


class NotFound(AppError):
    status, title, slug = 404, "Not Found", "not-found"


class Conflict(AppError):
    status, title, slug = 409, "Conflict", "conflict"


class Unauthorized(AppError):
    status, title, slug = 401, "Unauthorized", "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(AppError):
    status, title, slug = 403, "Forbidden", "forbidden"


class UnprocessableEntity(AppError):
    """422 with ``errors`` as API.md has every 422 carry: the given ones, or one naming
    ``loc`` (the part of the request at fault) with the detail as its message."""

    status, title, slug = 422, "Unprocessable Content", "validation-error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        loc: Sequence[str | int] = ("body",),
        errors: Sequence[Mapping[str, Any]] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail, **extra)
        self.extra["errors"] = list(errors or [{"loc": list(loc), "msg": self.detail}])


#: What a 503 names as unavailable: a class of dependency, never its address.
Dependency = Literal["database", "cache", "broker", "upstream service"]


class ServiceUnavailable(AppError):
    """503 with ``Retry-After``; ``dependency`` names the class of what is down."""

    status, title, slug = 503, "Service Unavailable", "dependency-unavailable"
    headers = {"Retry-After": "5"}

    def __init__(
        self, detail: str | None = None, *, dependency: Dependency | None = None, **extra: Any
    ) -> None:
        if dependency is not None:
            extra["dependency"] = dependency
        super().__init__(detail, **extra)
        self.dependency = dependency


def problem_details(
    status: int,
    *,
    title: str | None = None,
    detail: str | None = None,
    type_: str = "about:blank",
    request_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The body of one problem+json answer: ``type``, ``title``, ``status``, ``detail`` and
    ``request_id`` (the request it answers), then ``extra``. The one renderer of every
    problem answered."""
    return {
        "type": type_,
        "title": title or _phrase(status),
        "status": status,
        "detail": detail or title or _phrase(status),
        "request_id": request_id,
        **extra,
    }


def error_details(error: AppError, *, request_id: str | None) -> dict[str, Any]:
    """The problem body of ``error``: its status, title and detail, the type named by its
    slug (``urn:mercato:problem:<slug>``, ``http-<status>`` without one) and its extras."""
    return problem_details(
        error.status,
        title=error.title,
        detail=error.detail,
        type_=f"urn:mercato:problem:{error.slug or f'http-{error.status}'}",
        request_id=request_id,
        **error.extra,
    )


def problem_json(details: Mapping[str, Any]) -> bytes:
    """A problem body as the bytes every problem response sends (compact UTF-8 JSON)."""
    return json.dumps(
        details, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=str
    ).encode("utf-8")


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON

    def render(self, content: Any) -> bytes:
        return problem_json(content)


def problem(
    status: int, *, headers: Mapping[str, str] | None = None, **fields: Any
) -> ProblemResponse:
    """One problem+json response, its body :func:`problem_details` of ``status`` and
    ``fields`` (``title``, ``detail``, ``type_``, ``request_id`` and any extra)."""
    return ProblemResponse(
        problem_details(status, **fields), status_code=status, headers=dict(headers or {})
    )


def error_problem(error: AppError, *, request_id: str | None) -> ProblemResponse:
    """The problem+json response of ``error``, with its headers (``Retry-After``...)."""
    return ProblemResponse(
        error_details(error, request_id=request_id),
        status_code=error.status,
        headers=dict(error.headers),
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic's errors as ``[{"loc": [...], "msg": ...}]``, never echoing the input."""
    return [{"loc": list(err.get("loc", ())), "msg": str(err.get("msg", ""))} for err in errors]


_METHODS: Final = ("get", "put", "post", "delete", "patch")


def allowed_methods(request: Request, allow: str) -> str:
    """The ``Allow`` of a 405: every method the app's OpenAPI document gives the request's
    path, added to ``allow`` (Starlette's, which names only the methods of the first route
    at that path, while FastAPI makes one route per method)."""
    methods = {method.strip().upper() for method in allow.split(",") if method.strip()}
    for template, item in request.app.openapi().get("paths", {}).items():
        if compile_path(template)[0].match(request.url.path):
            methods.update(method.upper() for method in _METHODS if method in item)
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI, *, expose_internals: bool) -> None:
    """Render every error of ``app`` as problem+json."""

    async def app_error(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, AppError)
        return error_problem(exc, request_id=_request_id(request))

    async def http_error(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request, headers.get("Allow", ""))
        return problem(
            exc.status_code,
            detail=str(exc.detail) if exc.detail else None,
            request_id=_request_id(request),
            headers=headers,
        )

    async def invalid_request(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, RequestValidationError)
        return problem(
            422,
            title="Unprocessable Content",
            detail="The request is not valid; see `errors`.",
            type_="urn:mercato:problem:validation-error",
            request_id=_request_id(request),
            errors=validation_errors(exc.errors()),
        )

    async def dependency_down(request: Request, exc: Exception) -> ProblemResponse:
        outage = outage_of(exc)
        if outage is None:
            raise exc  # not an outage: the request-context middleware answers 500
        return outage_problem(exc, outage, request_id=_request_id(request), expose=expose_internals)

    app.add_exception_handler(AppError, app_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    for candidate in OUTAGE_CANDIDATES:
        app.add_exception_handler(candidate, dependency_down)


# --- dependency outages -----------------------------------------------------------------

#: The exception classes among which a dependency outage is looked for; ``outage_of``
#: decides for each instance (a ``ProgrammingError`` is a bug, not an outage).
OUTAGE_CANDIDATES: Final[tuple[type[Exception], ...]] = (
    DBAPIError,
    PoolTimeoutError,
    RedisError,
    StorageError,
    OSError,  # ConnectionError, TimeoutError, and the broker clients' connection errors
    aiohttp.ClientError,
    RuntimeError,  # aiokafka's and aiormq's channel errors
)

#: Top-level packages, by the class of dependency their code talks to; a bare
#: ``ConnectionRefusedError`` is attributed to the innermost of them on its traceback.
_PACKAGES: Final[dict[str, Dependency]] = {
    "asyncpg": "database",
    "aiosqlite": "database",
    "sqlite3": "database",
    "sqlalchemy": "database",
    "redis": "cache",
    "limits": "cache",
    "aio_pika": "broker",
    "aiormq": "broker",
    "pamqp": "broker",
    "aiokafka": "broker",
    "aiohttp": "upstream service",
}

_OUTAGE_DETAIL: Final[dict[Dependency | None, str]] = {
    "database": "The database is unavailable; try again shortly.",
    "cache": "The cache is unavailable; try again shortly.",
    "broker": "The message broker is unavailable; try again shortly.",
    "upstream service": "An upstream service is unavailable; try again shortly.",
    None: "A dependency of this service is unavailable; try again shortly.",
}


@dataclass(frozen=True, slots=True)
class Outage:
    """What :func:`outage_of` found: the class of dependency that is down, if known."""

    dependency: Dependency | None


@cache
def _postgres_outages() -> tuple[type[BaseException], ...]:
    from asyncpg import exceptions as pg  # type: ignore[import-untyped]

    # A lost connection, a server shutting down or starting up (57P01..57P03), and a
    # server out of connections or memory (53xxx): all pass when the server is back.
    return (
        pg.PostgresConnectionError,
        pg.OperatorInterventionError,
        pg.InsufficientResourcesError,
    )


@cache
def _broker_outages() -> tuple[type[BaseException], ...]:
    from aiokafka import errors as kafka
    from aiormq import exceptions as amqp

    return (
        amqp.AMQPConnectionError,
        amqp.ChannelInvalidStateError,
        amqp.ConnectionClosed,
        kafka.KafkaConnectionError,
        kafka.KafkaTimeoutError,
        kafka.NodeNotReadyError,
        kafka.RequestTimedOutError,
    )


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, what it was raised from, and (for a SQLAlchemy error) the driver's error."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack and len(seen) < 16:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        orig = getattr(current, "orig", None)
        if isinstance(current, DBAPIError) and isinstance(orig, BaseException):
            stack.append(orig)
        if current.__cause__ is not None:
            stack.append(current.__cause__)


def _package_on(tb: TracebackType | None) -> Dependency | None:
    """The dependency of the innermost known package on a traceback."""
    found: Dependency | None = None
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        found = _PACKAGES.get(module.partition(".")[0], found)
        tb = tb.tb_next
    return found


def _outage_of_one(exc: BaseException) -> Outage | None:
    if isinstance(exc, ServiceUnavailable):
        return Outage(exc.dependency)
    if isinstance(exc, PoolTimeoutError | OperationalError | InterfaceError):
        return Outage("database")
    if isinstance(exc, DBAPIError):
        return Outage("database") if exc.connection_invalidated else None
    if isinstance(exc, _postgres_outages()):
        return Outage("database")
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | StorageError):
        return Outage("cache")  # also BusyLoadingError: a Redis still loading its data
    if isinstance(exc, RedisReadOnlyError):
        return Outage("cache")  # a write reached a replica during a failover
    if isinstance(exc, _broker_outages()):
        return Outage("broker")
    if isinstance(exc, aiohttp.ClientConnectionError):
        return Outage("upstream service")
    if isinstance(exc, ConnectionError | TimeoutError):
        return Outage(_package_on(exc.__traceback__))
    if isinstance(exc, OSError) and (package := _package_on(exc.__traceback__)):
        return Outage(package)  # e.g. a host name that does not resolve
    return None


def outage_of(exc: BaseException) -> Outage | None:
    """Whether ``exc`` means a dependency is unavailable (then a 503, not a 500), and which
    class of dependency: a lost or refused connection, a pool timeout, a server shutting
    down, found on the exception or on what it was raised from."""
    for cause in _causes(exc):
        outage = _outage_of_one(cause)
        if outage is not None:
            return outage
    return None


def outage_problem(
    exc: BaseException, outage: Outage, *, request_id: str | None, expose: bool
) -> ProblemResponse:
    """The 503 for an outage: it names the class of dependency, never an address (the
    exception's own text is shown only in development)."""
    # One line, no traceback: an outage is not a bug, and during one every request ends
    # here (rendering a traceback each time would cost more than the request).
    log.error(
        "dependency unavailable",
        dependency=outage.dependency,
        error=type(exc).__name__,
        reason=str(exc).splitlines()[0][:300] if str(exc) else None,
    )
    extra: dict[str, Any] = {}
    if outage.dependency is not None:
        extra["dependency"] = outage.dependency
    return problem(
        503,
        title=ServiceUnavailable.title,
        detail=f"A dependency is unavailable: {exc}"
        if expose
        else _OUTAGE_DETAIL[outage.dependency],
        type_="urn:mercato:problem:dependency-unavailable",
        request_id=request_id,
        headers=ServiceUnavailable.headers,
        **extra,
    )


def unhandled_error(exc: BaseException, *, request_id: str | None, expose: bool) -> ProblemResponse:
    """The answer to an exception no handler took: 503 when it is an outage (one raised
    outside a route, or inside an exception group), else a plain 500 with the traceback
    only when ``expose`` is set."""
    outage = outage_of(exc)
    if outage is not None:
        return outage_problem(exc, outage, request_id=request_id, expose=expose)
    extra: dict[str, Any] = {}
    if expose:
        extra["traceback"] = traceback.format_exception(exc)
    return problem(500, detail="An unexpected error occurred.", request_id=request_id, **extra)
