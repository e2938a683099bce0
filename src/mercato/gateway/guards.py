"""What the gateway checks before a request may reach a service: the access token (auth
offload) and the rate limits. Both are :data:`~mercato.gateway.proxy.Guard` callables.

Auth offload verifies a ``Bearer`` token with the platform's :class:`TokenVerifier` (JWKS
from the auth service, verified tokens cached until they expire) and refuses a bad one with
401 before it reaches a service; the services verify again (defence in depth). A request
without a token goes on: whether a route needs one is the service's business.

Rate limits count per client address (``RATE_LIMIT_API``, or the route group's own limit in
``RATE_LIMIT_ROUTES``) and, for a verified token, per user (``RATE_LIMIT_USER``), in the
platform's :class:`RateLimiter` (Redis when configured, so every gateway instance shares
them). Every proxied answer carries the ``RateLimit-*`` headers of the tightest limit; a
refusal is 429 with ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from starlette.types import Scope

from mercato.gateway.proxy import Headers
from mercato.platform.errors import ServiceUnavailable, Unauthorized
from mercato.platform.net import TrustedProxies
from mercato.platform.security.ratelimit import RateLimiter, RateLimitResult, parse_limit
from mercato.platform.security.tokens import (
    InvalidToken,
    KeysUnavailable,
    Principal,
    TokenVerifier,
)

_AUTHORIZATION: Final = b"authorization"
_BEARER: Final = b"bearer "

#: Paths where a stale token a client still attaches must not block the request: the
#: endpoints that hand out tokens, and the keys that verify them.
TOKEN_ENDPOINTS: Final = (
    b"/api/v1/auth/login",
    b"/api/v1/auth/token",
    b"/api/v1/auth/refresh",
    b"/api/v1/auth/register",
    b"/api/v1/auth/.well-known/",
)


class InvalidAccessToken(Unauthorized):
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


def bearer_token(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, else None."""
    for name, value in scope["headers"]:
        if name == _AUTHORIZATION:
            if value[:7].lower() == _BEARER:
                return bytes(value[7:]).strip().decode("latin-1")
            return None
    return None


class AccessGuard:
    """Rate limits and auth offload in one pass, cheapest check first: the per-address
    limit (so a flood of forged tokens is throttled before any signature is checked), then
    the token, then the per-user limit.

    Either part may be off (``verifier`` or ``limiter`` None). A verified principal is left
    in ``scope["state"]["principal"]``.
    """

    def __init__(
        self,
        *,
        verifier: TokenVerifier | None,
        limiter: RateLimiter | None,
        trusted_proxies: TrustedProxies,
        api_limit: str,
        user_limit: str,
        route_limits: Mapping[str, str],
    ) -> None:
        self.verifier = verifier
        self.limiter = limiter
        self.trusted = trusted_proxies
        self.api_limit = parse_limit(api_limit)
        self.user_limit = parse_limit(user_limit)
        self.route_limits = {group: parse_limit(limit) for group, limit in route_limits.items()}

    async def __call__(self, scope: Scope, service: str) -> Headers | None:
        result: RateLimitResult | None = None
        if self.limiter is not None:
            address = self.trusted.client_address(scope)
            route_limit = self.route_limits.get(service)
            if route_limit is None:
                result = await self.limiter.hit(self.api_limit, "gateway", "api", address)
            else:
                result = await self.limiter.hit(route_limit, "gateway", service, address)
            result.raise_for_refusal()
        principal = await self._principal(scope) if self.verifier is not None else None
        if principal is not None and self.limiter is not None:
            per_user = await self.limiter.hit(self.user_limit, "gateway", "user", principal.user_id)
            if result is None or not per_user.allowed or per_user.remaining < result.remaining:
                result = per_user
            result.raise_for_refusal()
        return _raw_headers(result) if result is not None else None

    async def _principal(self, scope: Scope) -> Principal | None:
        assert self.verifier is not None
        token = bearer_token(scope)
        if token is None:
            return None
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        if raw_path.startswith(TOKEN_ENDPOINTS):
            return None
        try:
            principal = await self.verifier.verify(token)
        except InvalidToken as exc:
            raise InvalidAccessToken("The access token is not valid.", reason=exc.reason) from None
        except KeysUnavailable:
            raise ServiceUnavailable(
                "Access tokens cannot be checked right now; try again shortly."
            ) from None
        scope["state"]["principal"] = principal
        return principal


def _raw_headers(result: RateLimitResult) -> Headers:
    return [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in result.headers().items()
    ]
