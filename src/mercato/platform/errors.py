"""Errors as RFC 9457 problem details (``application/problem+json``).

Domain code raises an :class:`AppError` subclass that carries its status and title; one set
of handlers renders every error, including validation errors, unknown routes and dependency
outages, the same way. Nothing internal (stack trace, SQL, host name) leaves the process
outside ``development``.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
log = structlog.stdlib.get_logger("mercato.errors")


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON


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
    status, title, slug = 422, "Unprocessable Content", "validation-error"


class ServiceUnavailable(AppError):
    status, title, slug = 503, "Service Unavailable", "dependency-unavailable"
    headers = {"Retry-After": "5"}


def problem(
    status: int,
    *,
    title: str | None = None,
    detail: str | None = None,
    type_: str = "about:blank",
    request_id: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> ProblemResponse:
    """Build one problem+json response."""
    body: dict[str, Any] = {
        "type": type_,
        "title": title or _phrase(status),
        "status": status,
        "detail": detail or title or _phrase(status),
        "request_id": request_id,
        **extra,
    }
    return ProblemResponse(body, status_code=status, headers=dict(headers or {}))


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


def install_error_handlers(app: FastAPI, *, expose_internals: bool) -> None:
    """Render every error of ``app`` as problem+json."""

    async def app_error(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, AppError)
        slug = exc.slug or f"http-{exc.status}"
        return problem(
            exc.status,
            title=exc.title,
            detail=exc.detail,
            type_=f"urn:mercato:problem:{slug}",
            request_id=_request_id(request),
            headers=exc.headers,
            **exc.extra,
        )

    async def http_error(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, StarletteHTTPException)
        return problem(
            exc.status_code,
            detail=str(exc.detail) if exc.detail else None,
            request_id=_request_id(request),
            headers=exc.headers,
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
        log.error("dependency unavailable", error=type(exc).__name__, exc_info=exc)
        return problem(
            503,
            title=ServiceUnavailable.title,
            detail=f"A dependency is unavailable: {exc}"
            if expose_internals
            else "A dependency of this service is unavailable; try again shortly.",
            type_="urn:mercato:problem:dependency-unavailable",
            request_id=_request_id(request),
            headers=ServiceUnavailable.headers,
        )

    app.add_exception_handler(AppError, app_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    for outage in DEPENDENCY_ERRORS:
        app.add_exception_handler(outage, dependency_down)


def _redis_errors() -> tuple[type[Exception], ...]:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return (RedisConnectionError, RedisTimeoutError)


#: Exceptions that mean "a dependency is down", answered 503 rather than 500.
DEPENDENCY_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
    ConnectionError,
    TimeoutError,
    *_redis_errors(),
)


def internal_error_body(exc: BaseException, *, request_id: str | None, expose: bool) -> bytes:
    """The body of a 500: a plain problem, with the traceback only when ``expose`` is set."""
    extra: dict[str, Any] = {}
    if expose:
        extra["traceback"] = traceback.format_exception(exc)
    response = problem(
        500,
        detail="An unexpected error occurred.",
        request_id=request_id,
        **extra,
    )
    return bytes(response.body)
