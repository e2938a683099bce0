"""W3C trace context: the trace a request or an event belongs to.

With tracing on (:mod:`mercato.platform.telemetry`) the current OpenTelemetry span says it:
:func:`current_traceparent` is its ``traceparent``, which outgoing calls and published
events carry, and every log line gets its ``trace_id`` and ``span_id``
(:func:`add_trace_ids`).

With tracing off Mercato starts no trace, but passes one on: :class:`TraceContextMiddleware`
reads a well-formed ``traceparent`` header into :data:`traceparent_var` (and the log
context), so that events published while serving the request carry it
(``Envelope.traceparent``) and the consumers' logs show it.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from typing import Final

import structlog
from opentelemetry import trace
from starlette.types import ASGIApp, Receive, Scope, Send
from structlog.typing import EventDict, WrappedLogger

#: ``version-traceid-parentid-flags``, lower-case hex (W3C Trace Context, level 1).
_TRACEPARENT: Final = re.compile(rb"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")

traceparent_var: ContextVar[str | None] = ContextVar("mercato_traceparent", default=None)


def valid_traceparent(value: bytes | None) -> str | None:
    if value and _TRACEPARENT.fullmatch(value) and not value.startswith(b"ff"):
        return value.decode("ascii")
    return None


def _current_span_context() -> trace.SpanContext | None:
    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def current_traceparent() -> str | None:
    """The ``traceparent`` of the current span; without one (tracing off), the one the
    request or event being handled came with, if any."""
    context = _current_span_context()
    if context is None:
        return traceparent_var.get()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def current_trace_id() -> str | None:
    """The 32 hex digits of the current trace (see :func:`current_traceparent`)."""
    traceparent = current_traceparent()
    return traceparent.split("-")[1] if traceparent else None


def add_trace_ids(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """A structlog processor: ``trace_id`` and ``span_id`` of the current span, if any."""
    context = _current_span_context()
    if context is not None:
        event_dict.setdefault("trace_id", f"{context.trace_id:032x}")
        event_dict.setdefault("span_id", f"{context.span_id:016x}")
    return event_dict


def name_server_span(method: str, route: str) -> None:
    """Name the current server span after ``route`` (a template), for requests that no
    FastAPI route serves (the gateway's proxy); a no-op when nothing is traced."""
    span = trace.get_current_span()
    if span.is_recording():
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)


class TraceContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        value = None
        for key, raw in scope["headers"]:
            if key == b"traceparent":
                value = valid_traceparent(bytes(raw))
                break
        if value is None:
            await self.app(scope, receive, send)
            return
        token = traceparent_var.set(value)
        try:
            with structlog.contextvars.bound_contextvars(traceparent=value):
                await self.app(scope, receive, send)
        finally:
            traceparent_var.reset(token)
