"""The reverse proxy: ``/api/v1/<service>/<rest>`` -> ``<service>:/<service>/<rest>``.

A raw ASGI endpoint on pooled, kept-alive aiohttp sessions (one per upstream; see
docs/adr/0002-gateway-http-client.md). Bodies stream both ways, hop-by-hop headers are
dropped, ``X-Forwarded-For/Proto/Host`` and ``X-Request-ID`` are set, and an upstream that
is down or slow answers 502 or 504 problem+json.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Final

import aiohttp
import structlog
from starlette.types import Message, Receive, Scope, Send

from mercato.platform.errors import problem
from mercato.platform.net import TrustedProxies

log = structlog.stdlib.get_logger("mercato.gateway")

#: RFC 9110 7.6.1 connection-specific headers, never forwarded (plus Host, which we set).
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
}
_RESPONSE_DROP: Final = HOP_BY_HOP | {b"server", b"date", b"x-request-id"}  # the id is set by our middleware


def _connection_tokens(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    """Header names listed in ``Connection``, which are hop-by-hop too."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(token.strip().lower() for token in value.split(b","))
    return tokens


class Upstream:
    """One service's base URL and its pooled HTTP session."""

    def __init__(self, name: str, base_url: str, *, pool_size: int, timeout: aiohttp.ClientTimeout):
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=pool_size, keepalive_timeout=60, ttl_dns_cache=300),
            timeout=timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        await self.session.close()


class ServiceProxy:
    """An ASGI app that forwards a request to the upstream named in its path."""

    def __init__(
        self,
        upstreams: Mapping[str, str],
        *,
        trusted_proxies: TrustedProxies,
        timeout: float,
        connect_timeout: float,
        pool_size: int,
    ) -> None:
        self._urls = dict(upstreams)
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=timeout
        )
        self._pool_size = pool_size
        self.trusted = trusted_proxies
        self.upstreams: dict[str, Upstream] = {}

    async def start(self) -> None:
        self.upstreams = {
            name: Upstream(name, url, pool_size=self._pool_size, timeout=self._timeout)
            for name, url in self._urls.items()
        }

    async def close(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.close()
        self.upstreams = {}

    async def ready(self, name: str) -> None:
        """Raise unless the upstream's ``/readyz`` answers 200."""
        upstream = self.upstreams[name]
        async with upstream.session.get(f"{upstream.base_url}/readyz") as response:
            if response.status != 200:
                raise RuntimeError(f"{name} answered {response.status}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = scope.get("path_params", {})
        service, rest = str(params.get("service", "")), str(params.get("rest", ""))
        request_id = scope.get("state", {}).get("request_id")
        upstream = self.upstreams.get(service)
        if upstream is None:
            response = problem(404, detail=f"No service is named {service!r}.", request_id=request_id)
            await response(scope, receive, send)
            return
        url = f"{upstream.base_url}/{service}{rest}"
        query = scope.get("query_string", b"")
        if query:
            url = f"{url}?{query.decode('latin-1')}"
        headers = self._request_headers(scope, request_id)
        body = await _request_body(receive)
        started = False
        try:
            async with upstream.session.request(
                scope["method"], url, headers=headers, data=body, allow_redirects=False
            ) as upstream_response:
                await send(
                    {
                        "type": "http.response.start",
                        "status": upstream_response.status,
                        "headers": _response_headers(upstream_response.raw_headers),
                    }
                )
                started = True
                async for chunk in upstream_response.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        except TimeoutError:
            if started:
                raise
            log.warning("upstream timed out", upstream=service)
            await problem(
                504, detail=f"The {service} service did not answer in time.", request_id=request_id
            )(scope, receive, send)
        except aiohttp.ClientError as exc:
            if started:
                raise
            log.warning("upstream unreachable", upstream=service, error=type(exc).__name__)
            await problem(
                502, detail=f"The {service} service is unreachable.", request_id=request_id
            )(scope, receive, send)

    def _request_headers(self, scope: Scope, request_id: str | None) -> list[tuple[str, str]]:
        raw: list[tuple[bytes, bytes]] = scope["headers"]
        drop = _REQUEST_DROP | _connection_tokens(raw)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw if k not in drop]
        trusted_peer = self.trusted.is_trusted(self.trusted.peer(scope))
        proto = _first(raw, b"x-forwarded-proto") if trusted_peer else None
        host = (_first(raw, b"x-forwarded-host") if trusted_peer else None) or _first(raw, b"host")
        headers.append(("X-Forwarded-For", self.trusted.forwarded_for(scope)))
        headers.append(("X-Forwarded-Proto", proto or scope.get("scheme", "http")))
        if host:
            headers.append(("X-Forwarded-Host", host))
        if request_id:
            headers.append(("X-Request-ID", request_id))
        return headers


def _first(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _response_headers(raw: tuple[tuple[bytes, bytes], ...]) -> list[tuple[bytes, bytes]]:
    pairs = [(k.lower(), v) for k, v in raw]
    drop = _RESPONSE_DROP | _connection_tokens(pairs)
    return [(k, v) for k, v in pairs if k not in drop]


async def _request_body(receive: Receive) -> bytes | AsyncIterator[bytes] | None:
    """The whole body when it came in one message (the usual case), else a stream."""
    first: Message = await receive()
    chunk = first.get("body", b"")
    if not first.get("more_body", False):
        return chunk or None

    async def stream() -> AsyncIterator[bytes]:
        yield chunk
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            yield message.get("body", b"")
            more = message.get("more_body", False)

    return stream()
