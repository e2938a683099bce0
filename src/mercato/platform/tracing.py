"""W3C trace context: the ``traceparent`` of the request being served.

:class:`TraceContextMiddleware` reads a well-formed ``traceparent`` header into
:data:`traceparent_var` (and the log context), so that events published while serving the
request carry it (``Envelope.traceparent``) and the consumers' logs show it. Without the
header nothing is set: Mercato does not start traces by itself.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from typing import Final

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

#: ``version-traceid-parentid-flags``, lower-case hex (W3C Trace Context, level 1).
_TRACEPARENT: Final = re.compile(rb"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")

traceparent_var: ContextVar[str | None] = ContextVar("mercato_traceparent", default=None)


def valid_traceparent(value: bytes | None) -> str | None:
    if value and _TRACEPARENT.fullmatch(value) and not value.startswith(b"ff"):
        return value.decode("ascii")
    return None


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
