"""What every process does against hostile clients, below and at the edge of the app.

- :class:`HeaderLimitMiddleware` (pure ASGI) answers 431 problem+json to a request whose
  line and headers exceed ``MAX_HEADER_BYTES``, under any ASGI server.
- :func:`guarded_protocol` makes the HTTP protocol class that ``mercato up`` and
  ``mercato serve`` give uvicorn: httptools (fast, but without a header limit of its own:
  it keeps an unfinished header in memory however long it grows) with a bound on the bytes of
  a request head *as they arrive* (431 before the rest is read) and a deadline for a whole
  request (408, or a closed connection once an answer has started): slow-header and
  slow-body clients (slowloris) are cut off. A new connection that sends nothing is held to
  the same deadline; an idle kept-alive one to ``KEEP_ALIVE_TIMEOUT`` (uvicorn's). Past
  ``MAX_CONNECTIONS`` open connections a request gets 503 problem+json. A request its parser
  cannot read is 400 problem+json, and one with a method it does not know (``TRACK``) 501,
  both with the security headers (uvicorn's own answer is plain text without them).
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from http import HTTPStatus
from typing import Any, Final

import httptools
import structlog
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mercato.platform.errors import PROBLEM_JSON, problem, problem_details, problem_json

log = structlog.stdlib.get_logger("mercato.edge")

Headers = list[tuple[bytes, bytes]]

_END_OF_HEAD: Final = b"\r\n\r\n"
#: Seconds a refused connection keeps reading (and dropping) what the client still sends
#: after its answer: closing a socket with unread data sends a reset, which can destroy the
#: answer before the client read it (nginx's "lingering close").
LINGER: Final = 2.0
#: Per header line: ": " and CRLF, as on the wire.
_LINE_OVERHEAD: Final = 4

#: Headers of the answers written by the protocol itself (no app saw the request).
RAW_ANSWER_HEADERS: Final[Headers] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; base-uri 'none'; frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


def head_size(scope: Scope) -> int:
    """The bytes of a request's line and headers, about as they were on the wire."""
    line = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") + 16
    return line + sum(len(name) + len(value) + _LINE_OVERHEAD for name, value in scope["headers"])


class HeaderLimitMiddleware:
    """431 problem+json when a request's head is larger than ``limit`` bytes. Place it
    inside the request-id middleware so that the answer carries the request id."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and head_size(scope) > self.limit:
            await problem(
                431,
                detail=f"The request's headers are larger than {self.limit} bytes.",
                type_="urn:mercato:problem:headers-too-large",
                request_id=scope.get("state", {}).get("request_id"),
            )(scope, receive, send)
            return
        await self.app(scope, receive, send)


def problem_parts(status: int, detail: str, slug: str, *, hsts: bool) -> tuple[Headers, bytes]:
    """The headers and body of a problem+json answer that closes the connection, for an
    answer no app wrote (it carries a request id and the security headers all the same)."""
    request_id = uuid.uuid4().hex
    body = problem_json(
        problem_details(
            status, detail=detail, type_=f"urn:mercato:problem:{slug}", request_id=request_id
        )
    )
    headers: Headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        (b"x-request-id", request_id.encode()),
        *RAW_ANSWER_HEADERS,
    ]
    if hsts:
        headers.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
    return headers, body


def raw_problem(status: int, detail: str, slug: str, *, hsts: bool) -> bytes:
    """:func:`problem_parts` as the bytes of a complete HTTP/1.1 answer."""
    headers, body = problem_parts(status, detail, slug, hsts=hsts)
    head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode() + b"".join(
        name + b": " + value + b"\r\n" for name, value in headers
    )
    return head + b"\r\n" + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head-size limit, a per-request deadline, and a
    connection limit answered with problem+json (uvicorn's own ``limit_concurrency``
    answers plain text, and counts the asking connection against the limit).

    Subclasses made by :func:`guarded_protocol` set the class attributes.
    """

    max_head: int = 16 * 1024
    read_timeout: float = 30.0
    max_connections: int = 1000
    always_hsts: bool = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Bytes of the current request head so far; None once its headers are complete.
        self._head_bytes: int | None = 0
        self._tail = b""
        self._deadline: asyncio.TimerHandle | None = None
        self._lingering: asyncio.TimerHandle | None = None

    # -- the head limit ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:
            return  # answered and closing: what still comes is dropped
        if self._head_bytes is not None and not self._count_head(data):
            return
        super().data_received(data)

    def _count_head(self, data: bytes) -> bool:
        """Count the head bytes in ``data``; answer 431 and return False past the limit."""
        assert self._head_bytes is not None
        tail = self._tail
        seam = (tail + data[:3]).find(_END_OF_HEAD)  # an end split across two reads
        if seam >= 0:
            self._head_bytes += seam + len(_END_OF_HEAD) - len(tail)
        else:
            end = data.find(_END_OF_HEAD)
            self._head_bytes += len(data) if end < 0 else end + len(_END_OF_HEAD)
        self._tail = data[-3:] if len(data) >= 3 else (tail + data)[-3:]
        if self._head_bytes <= self.max_head:
            return True
        log.warning("request head too large", limit=self.max_head, client=self._client())
        self._answer_and_close(
            431,
            f"The request's headers are larger than {self.max_head} bytes.",
            "headers-too-large",
        )
        return False

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._tail = b""
        busy = (
            len(self.connections) > self.max_connections or len(self.tasks) >= self.max_connections
        )
        if not busy:
            super().on_headers_complete()
            return
        log.warning("connection limit reached", limit=self.max_connections)
        app, self.app = self.app, self._refuse_busy
        try:
            super().on_headers_complete()  # runs the refusal in the app's place
        finally:
            self.app = app

    async def _refuse_busy(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers, body = problem_parts(
            503,
            "The server is at its connection limit; try again shortly.",
            "server-busy",
            hsts=self.always_hsts or self.scheme == "https",
        )
        headers.append((b"retry-after", b"1"))
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def send_400_response(self, msg: str) -> None:
        """What uvicorn calls (inside its ``except HttpParserError``) for a request the parser
        refused: a problem+json with the security headers instead of its bare plain text,
        and 501 for a method the parser does not know (RFC 9110 15.6.2), not 400."""
        if isinstance(sys.exception(), httptools.HttpParserInvalidMethodError):
            self._answer_and_close(501, "This method is not implemented.", "method-not-implemented")
            return
        self._answer_and_close(400, "The request is not valid HTTP.", "malformed-request")

    # -- the request deadline ------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm_deadline()

    def on_message_complete(self) -> None:
        self._disarm_deadline()
        self._head_bytes = 0
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_deadline()
        if self._lingering is not None:
            self._lingering.cancel()
        super().connection_lost(exc)

    def _arm_deadline(self) -> None:
        self._deadline = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _disarm_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _read_timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._head_bytes == 0 and (self.cycle is None or self.cycle.response_complete):
            self.transport.close()  # nothing asked, nothing answered: just close
            return
        log.warning("request read timed out", seconds=self.read_timeout, client=self._client())
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # half an answer is out: only closing is honest
            return
        self._answer_and_close(
            408,
            f"The request was not received within {self.read_timeout:g} seconds.",
            "request-timeout",
        )

    # -- helpers -------------------------------------------------------------------------

    def _answer_and_close(self, status: int, detail: str, slug: str) -> None:
        hsts = self.always_hsts or self.scheme == "https"
        if self.cycle is not None and not self.cycle.response_complete:
            # The app is waiting for the body: it will read a disconnect.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.write(raw_problem(status, detail, slug, hsts=hsts))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self._disarm_deadline()
        self.transport.write_eof()  # the answer, then FIN; the client's close ends it sooner
        self.flow.resume_reading()
        self._lingering = self.loop.call_later(LINGER, self.transport.close)

    def _client(self) -> str | None:
        return self.client[0] if self.client else None


def guarded_protocol(
    *, max_head: int, read_timeout: float, max_connections: int, always_hsts: bool
) -> type[GuardedHttpToolsProtocol]:
    """A :class:`GuardedHttpToolsProtocol` class with these limits, for ``uvicorn.Config``."""
    limits = {
        "max_head": max_head,
        "read_timeout": read_timeout,
        "max_connections": max_connections,
        "always_hsts": always_hsts,
    }
    return type("MercatoHttpProtocol", (GuardedHttpToolsProtocol,), limits)
