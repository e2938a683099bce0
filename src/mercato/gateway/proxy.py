"""The reverse proxy: ``/api/v1/<service>/<rest>`` -> ``<service>:/<service>/<rest>``.

A raw ASGI app (no Starlette routing, no pydantic per request) on one pooled, kept-alive
aiohttp session per service (docs/adr/0003-gateway-http-client.md). For each request it:

1. finds the service in the route table (404 when there is none);
2. refuses a body above ``MAX_BODY_SIZE`` (413), by ``Content-Length`` before reading, or
   while streaming;
3. runs the guards (auth offload, rate limits), which may refuse (401, 429) or add headers;
4. picks an instance round-robin whose circuit breaker admits the call (503 when none does);
5. streams the request up and the response down, dropping hop-by-hop headers, setting
   ``X-Forwarded-For/Proto/Host`` and passing ``X-Request-ID``; a ``Location`` (a redirect,
   a 201) that names a service's own path or an internal address is made public: the same
   path under ``/api/v1`` (no answer names an internal host or port);
6. maps a slow upstream to 504 and an unreachable one to 502, counting both against the
   instance's breaker (and 502/503/504 answers too), and retries on another instance a
   call that never reached an upstream (refused, or no connection in time), and an
   idempotent call whose connection broke; a timed-out call is not retried.

In-flight requests are counted so that shutdown can drain them (:meth:`ServiceProxy.drain`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Final
from urllib.parse import urlsplit

import aiohttp
import structlog
from starlette.types import Message, Receive, Scope, Send
from yarl import URL

from mercato.gateway.metrics import GatewayMetrics
from mercato.gateway.upstreams import Instance, Upstream
from mercato.platform.errors import AppError, error_problem, problem
from mercato.platform.net import TrustedProxies
from mercato.platform.observability import ProbeFailed
from mercato.platform.resilience import CircuitOpenError, Permit
from mercato.platform.tracing import name_server_span

log = structlog.stdlib.get_logger("mercato.gateway")

API_PREFIX: Final = "/api/v1"
_PREFIX_LEN: Final = len(API_PREFIX)

Headers = list[tuple[bytes, bytes]]

Guard = Callable[[Scope, str], Awaitable[Headers | None]]
"""Runs before a request goes upstream: ``(scope, service) -> extra response headers``.

Raises an :class:`AppError` (401, 429...) to refuse the request; the proxy answers it as
problem+json and nothing reaches the service.
"""

#: RFC 9110 7.6.1 connection-specific headers, never forwarded.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_REQUEST_DROP: Final = HOP_BY_HOP | {
    b"host",
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-request-id",
    b"content-length",  # aiohttp sets it from the body it sends
}
#: Dropped from upstream answers: the gateway sets its own request id, security headers and
#: CORS policy, and shows no server banner.
_RESPONSE_DROP: Final = HOP_BY_HOP | {
    b"server",
    b"date",
    b"x-request-id",
    b"strict-transport-security",
    b"x-content-type-options",
    b"x-frame-options",
    b"referrer-policy",
    b"access-control-allow-origin",
    b"access-control-allow-credentials",
    b"access-control-allow-methods",
    b"access-control-allow-headers",
    b"access-control-expose-headers",
    b"access-control-max-age",
}
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: Upstream answers that say the instance is unhealthy (count against its breaker).
_UNHEALTHY: Final = frozenset({502, 503, 504})
#: Responses up to this size (by Content-Length) are read whole and sent in one message.
_BUFFER_LIMIT: Final = 256 * 1024


class PayloadTooLarge(AppError):
    status, title, slug = 413, "Content Too Large", "payload-too-large"


def _connection_tokens(headers: Sequence[tuple[bytes, bytes]]) -> set[bytes]:
    """Header names listed in ``Connection``, which are hop-by-hop too."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(token.strip().lower() for token in value.split(b","))
    return tokens


class ClientGone(Exception):
    """The client disconnected before its request body was read."""


class _RouteLabel:
    """Stands in for a Starlette route in ``scope["route"]``, so the platform's request
    metrics label proxied requests by service, not by raw path."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


class ServiceProxy:
    """An ASGI app that forwards ``/api/v1/<service>/...`` to that service."""

    def __init__(
        self,
        upstreams: Mapping[str, Upstream],
        *,
        trusted_proxies: TrustedProxies,
        max_body_size: int,
        retries: int,
        metrics: GatewayMetrics,
        guards: Sequence[Guard] = (),
        name_spans: bool = True,
    ) -> None:
        self.upstreams = dict(upstreams)
        self.trusted = trusted_proxies
        self.max_body_size = max_body_size
        self.retries = retries
        self.metrics = metrics
        self.guards = list(guards)
        #: Whether server spans exist to be named after the service (tracing is on).
        self.name_spans = name_spans
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._labels = {name: _RouteLabel(f"{API_PREFIX}/{name}/{{path}}") for name in upstreams}
        self._internal = frozenset(
            instance.base.raw_authority.lower()
            for upstream in upstreams.values()
            for instance in upstream.instances
        )
        self._unknown = _RouteLabel(f"{API_PREFIX}/{{unknown}}")

    async def drain(self, within: float) -> bool:
        """Wait until no request is in flight (at most ``within`` seconds); True if idle."""
        try:
            async with asyncio.timeout(within):
                await self._idle.wait()
        except TimeoutError:
            log.warning("shutdown with requests still in flight", in_flight=self.in_flight)
            return False
        return True

    async def ready(self, name: str) -> None:
        """Raise unless some instance of ``name`` answers ``/readyz`` with 200. The failure
        says why (the checks that failed there), never where: no host or port."""
        upstream = self.upstreams[name]
        failures: list[str] = []
        for instance in upstream.instances:
            try:
                async with upstream.session.get(instance.base / "readyz") as response:
                    if response.status == 200:
                        return
                    failures.append(await _unready_reason(response))
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures.append(f"unreachable ({type(exc).__name__})")
        raise ProbeFailed("; ".join(dict.fromkeys(failures)))

    # -- the request path ----------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        upstream_path = raw_path[_PREFIX_LEN:] if raw_path.startswith(b"/api/v1/") else b"/"
        service = upstream_path[1:].split(b"/", 1)[0].split(b"?", 1)[0].decode("latin-1")
        upstream = self.upstreams.get(service)
        state = scope.setdefault("state", {})
        request_id: str | None = state.get("request_id")
        if upstream is None:
            scope["route"] = self._unknown
            await problem(404, detail=f"No service is named {service!r}.", request_id=request_id)(
                scope, receive, send
            )
            return
        scope["route"] = label = self._labels[service]
        if self.name_spans:
            name_server_span(scope["method"], label.path)
        self.in_flight += 1
        self._idle.clear()
        try:
            await self._forward(scope, receive, send, upstream, upstream_path, request_id)
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        upstream: Upstream,
        path: bytes,
        request_id: str | None,
    ) -> None:
        raw_headers: Headers = scope["headers"]
        try:
            declared = _content_length(raw_headers)
            if declared is not None and declared > self.max_body_size:
                raise PayloadTooLarge(f"The body is larger than {self.max_body_size} bytes.")
            extra: Headers = []
            for guard in self.guards:
                added = await guard(scope, upstream.name)
                if added:
                    extra.extend(added)
            body = await self._request_body(receive)
        except AppError as refusal:
            await self._refuse(scope, receive, send, refusal, request_id)
            return
        except ClientGone:
            return

        query: bytes = scope.get("query_string", b"")
        target = path + b"?" + query if query else path
        headers = self._request_headers(scope, raw_headers, request_id)
        method: str = scope["method"]
        replayable = not isinstance(body, _BodyStream)
        attempts = 1 + (self.retries if replayable else 0)
        tried: Instance | None = None
        for attempt in range(attempts):
            try:
                instance, permit = upstream.choose(exclude=tried)
            except CircuitOpenError as refused:
                self.metrics.error(upstream.name, "circuit_open")
                await self._refuse(scope, receive, send, refused, request_id)
                return
            tried = instance
            url = URL(instance.url + target.decode("latin-1"), encoded=True)
            outcome = await self._attempt(
                scope, receive, send, upstream, permit, method, url, headers, body, extra
            )
            if outcome is _Outcome.DONE:
                return
            last = attempt == attempts - 1
            if outcome is _Outcome.NOT_SENT and not last:
                continue
            if outcome is _Outcome.BROKEN and method in _IDEMPOTENT and not last:
                continue
            await self._upstream_failed(scope, receive, send, upstream.name, outcome, request_id)
            return

    async def _attempt(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        upstream: Upstream,
        permit: Permit,
        method: str,
        url: URL,
        headers: list[tuple[str, str]],
        body: bytes | _BodyStream | None,
        extra: Headers,
    ) -> _Outcome:
        started = time.perf_counter()
        data = body.iterate() if isinstance(body, _BodyStream) else body
        head_sent = [False]
        try:
            async with upstream.session.request(
                method, url, headers=headers, data=data, allow_redirects=False
            ) as response:
                status = response.status
                if status in _UNHEALTHY:
                    permit.failure()
                else:
                    permit.success()
                self.metrics.observe(upstream.name, status, time.perf_counter() - started)
                await self._relay(send, response, extra, head_sent)
                return _Outcome.DONE
        except Exception as exc:
            if head_sent[0]:
                raise  # the answer is half sent: only dropping the connection is honest
            if isinstance(body, _BodyStream) and body.overflowed:
                permit.release()
                too_large = PayloadTooLarge(f"The body is larger than {self.max_body_size} bytes.")
                await self._refuse(
                    scope, receive, send, too_large, scope["state"].get("request_id")
                )
                return _Outcome.DONE
            if isinstance(exc, aiohttp.ConnectionTimeoutError | aiohttp.ClientConnectorError):
                permit.failure()  # never connected: nothing was sent, any method may retry
                return self._failed(upstream.name, "connect", _Outcome.NOT_SENT)
            if isinstance(exc, TimeoutError):
                permit.failure()
                return self._failed(upstream.name, "timeout", _Outcome.TIMEOUT)
            if isinstance(exc, aiohttp.ClientConnectionError):
                permit.failure()
                return self._failed(upstream.name, "disconnect", _Outcome.BROKEN)
            permit.release()
            raise
        except BaseException:
            permit.release()
            raise

    def _failed(self, upstream: str, kind: str, outcome: _Outcome) -> _Outcome:
        self.metrics.error(upstream, kind)
        log.warning("upstream call failed", upstream=upstream, kind=kind)
        return outcome

    async def _relay(
        self, send: Send, response: aiohttp.ClientResponse, extra: Headers, head_sent: list[bool]
    ) -> None:
        headers = with_guard_headers(_response_headers(response.raw_headers, self._internal), extra)
        start = {"type": "http.response.start", "status": response.status, "headers": headers}
        length = response.content_length
        if length is not None and length <= _BUFFER_LIMIT:
            payload = await response.read()
            head_sent[0] = True
            await send(start)
            await send({"type": "http.response.body", "body": payload})
            return
        head_sent[0] = True
        await send(start)
        async for chunk in response.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, error: AppError, request_id: str | None
    ) -> None:
        if not isinstance(error, CircuitOpenError):
            self.metrics.refused(error.slug or str(error.status))
        await error_problem(error, request_id=request_id)(scope, receive, send)

    async def _upstream_failed(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        service: str,
        outcome: _Outcome,
        request_id: str | None,
    ) -> None:
        if outcome is _Outcome.TIMEOUT:
            response = problem(
                504,
                detail=f"The {service} service did not answer in time.",
                type_="urn:mercato:problem:upstream-timeout",
                request_id=request_id,
            )
        else:
            response = problem(
                502,
                detail=f"The {service} service is unreachable.",
                type_="urn:mercato:problem:upstream-unreachable",
                request_id=request_id,
            )
        await response(scope, receive, send)

    async def _request_body(self, receive: Receive) -> bytes | _BodyStream | None:
        """The whole body when it is small (read into memory: such a request can be
        retried), else a stream that is forwarded as it arrives and stops at the limit."""
        chunks: list[bytes] = []
        size = 0
        more = True
        while more and size <= _BUFFER_LIMIT:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_size:
                raise PayloadTooLarge(f"The body is larger than {self.max_body_size} bytes.")
            if chunk:
                chunks.append(chunk)
            more = message.get("more_body", False)
        if not more:
            return b"".join(chunks) or None
        return _BodyStream(receive, b"".join(chunks), self.max_body_size)

    def _request_headers(
        self, scope: Scope, raw: Headers, request_id: str | None
    ) -> list[tuple[str, str]]:
        """The headers sent upstream, in one pass over the client's: hop-by-hop and
        forwarding headers dropped (and the names ``Connection`` lists), then the gateway's
        own ``X-Forwarded-*`` and ``X-Request-ID``."""
        headers: list[tuple[str, str]] = []
        listed: set[bytes] | None = None
        proto: str | None = None
        forwarded_host: str | None = None
        host: str | None = None
        for name, value in raw:
            if name in _REQUEST_DROP:
                if name == b"connection":
                    listed = (listed or set()) | _connection_tokens(((name, value),))
                elif name == b"host" and host is None:
                    host = value.decode("latin-1")
                elif name == b"x-forwarded-proto" and proto is None:
                    proto = value.decode("latin-1")
                elif name == b"x-forwarded-host" and forwarded_host is None:
                    forwarded_host = value.decode("latin-1")
                continue
            headers.append((name.decode("latin-1"), value.decode("latin-1")))
        if listed:
            headers = [(k, v) for k, v in headers if k.encode("latin-1") not in listed]
        trusted_peer = self.trusted.is_trusted(self.trusted.peer(scope))
        if not trusted_peer:
            proto = forwarded_host = None
        headers.append(("X-Forwarded-For", self.trusted.forwarded_for(scope)))
        headers.append(("X-Forwarded-Proto", proto or scope.get("scheme", "http")))
        if public_host := forwarded_host or host:
            headers.append(("X-Forwarded-Host", public_host))
        if request_id:
            headers.append(("X-Request-ID", request_id))
        return headers


class _Outcome:
    """How one attempt ended (a tiny enum without Enum's lookup cost)."""

    DONE: _Outcome
    NOT_SENT: _Outcome  # never reached the upstream: safe to retry for any method
    BROKEN: _Outcome  # the connection broke: retry only idempotent methods
    TIMEOUT: _Outcome  # no answer in time: not retried (it would double the wait)


_Outcome.DONE = _Outcome()
_Outcome.NOT_SENT = _Outcome()
_Outcome.BROKEN = _Outcome()
_Outcome.TIMEOUT = _Outcome()


class _BodyStream:
    """A request body that arrives in several messages; forwarded as it comes."""

    def __init__(self, receive: Receive, first: bytes, limit: int) -> None:
        self._receive = receive
        self._first = first
        self._limit = limit
        self.overflowed = False

    async def iterate(self) -> AsyncIterator[bytes]:
        size = len(self._first)
        if self._first:
            yield self._first
        more = True
        while more:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                return
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self._limit:
                self.overflowed = True
                raise PayloadTooLarge
            if chunk:
                yield chunk
            more = message.get("more_body", False)


async def _unready_reason(response: aiohttp.ClientResponse) -> str:
    """``answered 503: schema, database`` from a service's /readyz body (its failed checks)."""
    try:
        body = await response.json(content_type=None)
        failed = [name for name, result in body["checks"].items() if result != "ok"]
    except (ValueError, KeyError, TypeError, AttributeError, aiohttp.ClientError):
        failed = []
    reason = f"answered {response.status}"
    return f"{reason}: {', '.join(map(str, failed))}" if failed else reason


def _content_length(headers: Headers) -> int | None:
    for key, value in headers:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _response_headers(raw: tuple[tuple[bytes, bytes], ...], internal: frozenset[str]) -> Headers:
    """An upstream's answer headers as the client gets them, in one pass: names lowercased,
    hop-by-hop and the gateway's own dropped (and the names ``Connection`` lists),
    ``Location`` made public."""
    kept: Headers = []
    listed: set[bytes] | None = None
    for name, value in raw:
        name = name.lower()
        if name in _RESPONSE_DROP:
            if name == b"connection":
                listed = (listed or set()) | _connection_tokens(((name, value),))
            continue
        kept.append((name, public_location(value, internal) if name in _LOCATIONS else value))
    if listed:
        return [(name, value) for name, value in kept if name not in listed]
    return kept


_LOCATIONS: Final = frozenset({b"location", b"content-location"})
_RATE_LIMIT: Final = frozenset({b"ratelimit-limit", b"ratelimit-remaining", b"ratelimit-reset"})


def with_guard_headers(own: Headers, extra: Headers) -> Headers:
    """An upstream's answer headers ``own`` plus the guards' ``extra``, with one set of
    ``RateLimit-*``: the tighter limit's (fewer remaining). A service keeps limits of its own
    (a login's), and two values in one header (``RateLimit-Remaining: 0, 9``) tell a client
    nothing."""
    theirs, ours = _remaining(own), _remaining(extra)
    if theirs is None:
        return [*own, *extra]
    if ours is None or theirs <= ours:
        return [*own, *((k, v) for k, v in extra if k.lower() not in _RATE_LIMIT)]
    return [*((k, v) for k, v in own if k.lower() not in _RATE_LIMIT), *extra]


def _remaining(headers: Headers) -> int | None:
    for name, value in headers:
        if name.lower() == b"ratelimit-remaining":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def public_location(value: bytes, internal: frozenset[str]) -> bytes:
    """A service's ``Location`` as the client must see it.

    An absolute URL naming an upstream (``internal``: ``host:port`` of every instance) or
    any loopback, private or link-local address loses its scheme and authority; a path of
    the service's own (``/products/1``) goes under ``/api/v1``. An external URL, a path
    already under ``/api/v1`` and a relative reference (``1``, ``?page=2``) stay as they are.
    """
    text = value.decode("latin-1").strip()
    try:
        parts = urlsplit(text)
    except ValueError:
        return b"/"  # unparseable: say nothing rather than echo it
    if parts.netloc:
        if not _is_internal(parts.netloc, parts.hostname, internal):
            return value
        text = parts.path or "/"
        if parts.query:
            text += "?" + parts.query
        if parts.fragment:
            text += "#" + parts.fragment
    own_path = text.startswith("/") and not text.startswith("//")
    public = text == API_PREFIX or text.startswith((API_PREFIX + "/", API_PREFIX + "?"))
    if own_path and not public:
        text = API_PREFIX + text
    return text.encode("latin-1")


def _is_internal(netloc: str, hostname: str | None, internal: frozenset[str]) -> bool:
    if netloc.rsplit("@", 1)[-1].lower() in internal:
        return True
    if not hostname:
        return False
    if hostname == "localhost" or hostname.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(hostname)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local
