"""The gateway's pure ASGI middleware: security headers, CORS, and the fast path to the proxy.

Order, outermost first: :class:`SecurityHeadersMiddleware` (so every answer, errors
included, carries the headers) -> the platform's trace and request-id/log/metrics
middleware -> CORS -> the host check -> the platform's header and body limits ->
:class:`ApiDispatchMiddleware`, which sends ``/api/v1/...`` to the proxy and the rest on to
FastAPI's routes (health, docs, storefront).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mercato.platform.errors import problem
from mercato.platform.net import TrustedProxies
from mercato.settings import Settings

Headers = list[tuple[bytes, bytes]]

_CSP: Final = b"content-security-policy"
_HOST: Final = b"host"
_FORWARDED_PROTO: Final = b"x-forwarded-proto"
HSTS: Final = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
_DROP: Final = frozenset({b"server", b"x-powered-by"})
_VARY_ORIGIN: Final = (b"vary", b"Origin")

#: Headers a browser may send cross-origin, and may read from an answer.
CORS_ALLOW_HEADERS: Final = ["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"]
CORS_EXPOSE_HEADERS: Final = [
    "X-Request-ID",
    "ETag",
    "Location",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
]


def security_headers(settings: Settings) -> Headers:
    """The headers API.md puts on every gateway answer, as raw ASGI pairs (HSTS, which
    depends on the request, is :class:`HstsPolicy`'s)."""
    return [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", settings.referrer_policy.encode("latin-1")),
    ]


class HstsPolicy:
    """When an answer carries ``Strict-Transport-Security``: always in production (the site
    is served over HTTPS, whatever hop terminates it), else only on a request that came
    over HTTPS: the scope's scheme, or ``X-Forwarded-Proto: https`` from a trusted proxy.
    Over plain HTTP the header is meaningless and pins a developer's ``localhost``."""

    def __init__(self, *, always: bool, trusted_proxies: TrustedProxies) -> None:
        self.always = always
        self.trusted = trusted_proxies

    def applies(self, scope: Scope) -> bool:
        if self.always or scope.get("scheme") == "https":
            return True
        if not self.trusted.is_trusted(self.trusted.peer(scope)):
            return False
        for name, value in scope["headers"]:
            if name == _FORWARDED_PROTO:
                return bool(value.split(b",", 1)[0].strip().lower() == b"https")
        return False


class SecurityHeadersMiddleware:
    """Adds the security headers to every answer and removes any server banner.

    A response that already set its own ``Content-Security-Policy`` (a storefront page with
    a script nonce) keeps it; every other answer gets the configured policy.
    """

    def __init__(self, app: ASGIApp, *, headers: Headers, csp: str, hsts: HstsPolicy) -> None:
        self.app = app
        self.headers = headers
        self.with_hsts = [*headers, HSTS]
        self.csp = (_CSP, csp.encode("latin-1"))
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        added = self.with_hsts if self.hsts.applies(scope) else self.headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                own: Headers = message.get("headers", [])
                has_csp = False
                kept: Headers = []
                for name, value in own:
                    lowered = name.lower()
                    if lowered in _DROP:
                        continue
                    if lowered == _CSP:
                        has_csp = True
                    kept.append((name, value))
                kept.extend(added)
                if not has_csp:
                    kept.append(self.csp)
                message["headers"] = kept
            await send(message)

        await self.app(scope, receive, send_with_headers)


def cors_options(settings: Settings) -> dict[str, Any]:
    """Options of :class:`CorsMiddleware`: origins from ``CORS_ORIGINS``
    only; credentials only with an explicit list, never with a wildcard."""
    origins = list(settings.cors_origins)
    return {
        "allow_origins": origins,
        "allow_credentials": "*" not in origins,
        "allow_methods": ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        "allow_headers": CORS_ALLOW_HEADERS,
        "expose_headers": CORS_EXPOSE_HEADERS,
        "max_age": 600,
    }


class CorsMiddleware:
    """Starlette's (pure ASGI) CORS middleware, entered only by requests with an ``Origin``.

    Measured on the proxied path: Starlette's parses the headers and wraps ``send`` for every
    request. A request without ``Origin`` is not a CORS request; it only needs
    ``Vary: Origin`` on its answer (so a shared cache never hands it to a browser origin),
    and not even that when no origin is allowed at all.
    """

    def __init__(self, app: ASGIApp, *, options: dict[str, Any]) -> None:
        self.app = app
        self.cors = CORSMiddleware(app, **options)
        self.vary = bool(options.get("allow_origins"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or any(name == b"origin" for name, _ in scope["headers"]):
            await self.cors(scope, receive, send)
            return
        if not self.vary:
            await self.app(scope, receive, send)
            return

        async def send_with_vary(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), _VARY_ORIGIN]
            await send(message)

        await self.app(scope, receive, send_with_vary)


class AllowedHostsMiddleware:
    """Refuses (400) a request whose ``Host`` is not in ``ALLOWED_HOSTS``: the front door
    answers only for its own names, so a forged ``Host`` cannot reach links, caches or logs.

    ``*`` allows any host, ``*.example.com`` any subdomain. Probes (``/healthz``,
    ``/readyz``, ``/metrics``) are exempt: orchestrators call them by pod address. A request
    with several ``Host`` headers is refused everywhere, whatever the list says (RFC 9112
    3.2: two hops could each believe a different one).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        hosts: list[str],
        exempt: tuple[str, ...] = ("/healthz", "/readyz", "/metrics"),
    ) -> None:
        self.app = app
        self.exempt = exempt
        # Starlette's TrustedHostMiddleware decides (parsing and matching the host); it is
        # asked, not stacked, because its refusal is a plain-text 400 built inside its
        # __call__, where the API promises a problem+json with the request id, and it has
        # neither the probes' exemption nor the one-Host rule.
        self.check = TrustedHostMiddleware(_accept, allowed_hosts=hosts, www_redirect=False)
        # Its verdict depends on the Host value alone: asked once per value (a bounded
        # number of them), not on every request.
        self.verdicts: dict[bytes | None, bool] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host: bytes | None = None
        hosts = 0
        for name, value in scope["headers"]:
            if name == _HOST:
                host = value
                hosts += 1
        if hosts > 1:
            await self._refuse(scope, receive, send, "A request must have one Host header.")
            return
        if scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        allowed = self.verdicts.get(host)
        if allowed is None:
            await self.check(scope, receive, _discard)
            allowed = bool(scope.pop(_ACCEPTED, False))
            if len(self.verdicts) < _VERDICTS_KEPT:
                self.verdicts[host] = allowed
        if allowed:
            await self.app(scope, receive, send)
            return
        await self._refuse(scope, receive, send, "Invalid host header.")

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, detail: str) -> None:
        request_id = scope.get("state", {}).get("request_id")
        await problem(
            400, detail=detail, type_="urn:mercato:problem:invalid-host", request_id=request_id
        )(scope, receive, send)


_ACCEPTED: Final = "mercato.host_accepted"
#: Host values whose verdict is remembered (forged ones beyond it are checked each time).
_VERDICTS_KEPT: Final = 256


async def _accept(scope: Scope, receive: Receive, send: Send) -> None:
    """Where Starlette's host check lets an allowed request through."""
    scope[_ACCEPTED] = True


async def _discard(message: Message) -> None:
    """Where Starlette's host check sends its own refusal (replaced by a problem)."""


class ApiDispatchMiddleware:
    """The gateway's innermost middleware: ``/api/v1/...`` goes to ``api`` (the proxy),
    everything else on to ``app`` (FastAPI's exception layer and routes).

    Every other middleware sits outside it, so both paths get them; the proxied path skips
    only the exception layer and the router, which it does not need: the request-id
    middleware turns an unhandled error into a problem+json 500 on its own.
    """

    def __init__(self, app: ASGIApp, *, api: ASGIApp, prefix: str = "/api/v1") -> None:
        self.app = app
        self.api = api
        self.prefix = prefix
        self.prefix_slash = prefix + "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith(self.prefix_slash) or path == self.prefix:
                await self.api(scope, receive, send)
                return
        await self.app(scope, receive, send)


class ProxyEndpoint:
    """Calls the proxy of the running gateway; 503 while it is not started (the proxy's
    HTTP sessions exist only while the lifespan runs)."""

    def __init__(self, proxy: Callable[[], ASGIApp | None]) -> None:
        self.proxy = proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        proxy = self.proxy()
        if proxy is None:
            request_id = scope.get("state", {}).get("request_id")
            await problem(503, detail="The gateway is not started.", request_id=request_id)(
                scope, receive, send
            )
            return
        await proxy(scope, receive, send)
