"""Pure ASGI middleware shared by every service (no ``BaseHTTPMiddleware``: it is slow).

:class:`RequestContextMiddleware` gives each request its id (the client's ``X-Request-ID``
when it is sane, else a new one), binds it and the service name to every log line, returns
it on the response, writes one access-log line, records the request metrics, and turns an
unhandled exception into a problem+json 500 (503 for a dependency outage) that carries
the same id (and reports it, when error reporting is on). :class:`BodyLimitMiddleware`
refuses a request body over the service's limit.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from typing import Final

import structlog
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mercato.platform.errors import outage_of, problem, unhandled_error
from mercato.platform.observability import HttpMetrics

REQUEST_ID_HEADER: Final = b"x-request-id"
_SANE_REQUEST_ID: Final = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")

#: The id of the request being served, for code that is not handed the request.
request_id_var: ContextVar[str | None] = ContextVar("mercato_request_id", default=None)

access_log = structlog.stdlib.get_logger("mercato.access")
#: What the access log and the metrics say of a request whose client hung up before its
#: answer (nginx's code for it).
CLIENT_CLOSED_REQUEST = 499
error_log = structlog.stdlib.get_logger("mercato.errors")


def new_request_id() -> str:
    return uuid.uuid4().hex


def sane_request_id(value: bytes | None) -> str | None:
    """The client's id if it is 1..128 safe characters, else None."""
    if value and _SANE_REQUEST_ID.fullmatch(value):
        return value.decode("ascii")
    return None


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "<unmatched>"


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        service: str,
        metrics: HttpMetrics | None = None,
        log_requests: bool = True,
        expose_errors: bool = False,
        report_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.app = app
        self.service = service
        self.metrics = metrics
        self.log_requests = log_requests
        self.expose_errors = expose_errors
        #: Told of every unhandled exception that is not an outage (Sentry, when on).
        self.report_error = report_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = sane_request_id(header(scope, REQUEST_ID_HEADER)) or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        id_header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status = 500
        started = False
        client_gone = False

        async def receive_noting_hang_up() -> Message:
            nonlocal client_gone
            message = await receive()
            if message["type"] == "http.disconnect" and not started:
                client_gone = True
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        token = request_id_var.set(request_id)
        log_tokens = structlog.contextvars.bind_contextvars(
            request_id=request_id, service=self.service
        )
        start = time.perf_counter()
        try:
            await self.app(scope, receive_noting_hang_up, send_with_id)
        except Exception as exc:
            if client_gone:
                status = CLIENT_CLOSED_REQUEST
                return
            if outage_of(exc) is None:
                error_log.exception("unhandled error", method=scope["method"], path=scope["path"])
                if self.report_error is not None:
                    self.report_error(exc)
            if started:
                raise
            response = unhandled_error(exc, request_id=request_id, expose=self.expose_errors)
            await response(scope, receive, send_with_id)
        finally:
            if client_gone:
                # The client hung up (or was cut off as too slow) before its answer: its
                # doing, not ours, so not a 4xx or 5xx of ours either (nginx's 499).
                status = CLIENT_CLOSED_REQUEST
            elapsed = time.perf_counter() - start
            if self.metrics is not None:
                self.metrics.observe(scope["method"], route_template(scope), status, elapsed)
            if self.log_requests:
                access_log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )
            structlog.contextvars.reset_contextvars(**log_tokens)
            request_id_var.reset(token)


class BodyTooLarge(StarletteHTTPException):
    """413, raised from ``receive`` once the body passes the limit. An HTTPException, so
    FastAPI's body parsing lets it through to the problem handler as it is."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"The request body is larger than {limit} bytes.",
            headers={"Connection": "close"},  # the rest of the body is never read
        )


class BodyLimitMiddleware:
    """Refuses a request body of more than ``max_bytes`` with a 413 problem: before the
    route runs when ``Content-Length`` says so, else as soon as the bytes received pass
    the limit (a chunked body, or one longer than it said), so no body is ever held whole
    past the limit. Sits inside :class:`RequestContextMiddleware` (the 413 carries the
    request id)."""

    # Not Starlette's RequestBodyLimitMiddleware (FastAPI's max_body_size): that answers a
    # plain-text 413, and a declared oversize only once the route reads the body or answers.
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            refusal = BodyTooLarge(self.max_bytes)
            response = problem(
                413,
                title="Content Too Large",
                detail=str(refusal.detail),
                request_id=scope.get("state", {}).get("request_id"),
                headers=refusal.headers,
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted_receive, send)
