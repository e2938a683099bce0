"""What the gateway checks before a request may reach a service: the access token (auth
offload) and the rate limits. Both are :data:`~mercato.gateway.proxy.Guard` callables.

Auth offload verifies a ``Bearer`` token with the platform's :class:`TokenVerifier` (JWKS
from the auth service, verified tokens cached until they expire) and refuses a bad one with
401 before it reaches a service; the services verify again (defence in depth). A request
without a token goes on: whether a route needs one is the service's business.

Rate limits count per signed-in user (``RATE_LIMIT_USER``) for a verified token, and per
client address (``RATE_LIMIT_API``, or the route group's own limit in ``RATE_LIMIT_ROUTES``)
otherwise; see :class:`AccessGuard`. They live in the platform's :class:`RateLimiter` (Redis
when configured, so every gateway instance shares them). Every proxied answer carries the
``RateLimit-*`` headers of the tightest limit; a refusal is 429 with ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import structlog
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

security_log = structlog.stdlib.get_logger("mercato.security")

_AUTHORIZATION: Final = b"authorization"
_BEARER: Final = b"bearer "

#: Paths where a stale token a client still attaches must not block the request: the
#: endpoints that hand out tokens or let a signed-out person back in, and the keys.
TOKEN_ENDPOINTS: Final = (
    b"/api/v1/auth/login",
    b"/api/v1/auth/token",
    b"/api/v1/auth/refresh",
    b"/api/v1/auth/register",
    b"/api/v1/auth/password/forgot",
    b"/api/v1/auth/password/reset",
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
    """Auth offload and rate limits in one pass.

    - A request with a valid token counts against its user's limit (``RATE_LIMIT_USER``,
      larger than the address limit, so signed-in clients behind one address, such as an
      office NAT, are not starved by it), plus its route group's limit when one is set.
    - Any other request counts against its client address: the route group's limit when one
      is set, else ``RATE_LIMIT_API``. A request whose token is refused counts there too
      before its 401, so a flood of forged tokens runs into 429 like any other flood.

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
        try:
            principal = await self._principal(scope) if self.verifier is not None else None
        except InvalidAccessToken:
            if self.limiter is not None:
                (await self._per_address(scope, service, self.limiter)).raise_for_refusal()
            raise
        if self.limiter is None:
            return None
        if principal is None:
            result = await self._per_address(scope, service, self.limiter)
        else:
            result = await self.limiter.hit(
                self.user_limit, "gateway", "user", principal.user_id, name="user"
            )
            route_limit = self.route_limits.get(service)
            if route_limit is not None and result.allowed:
                address = self.trusted.client_address(scope)
                per_route = await self.limiter.hit(
                    route_limit, "gateway", service, address, name=service
                )
                if not per_route.allowed or per_route.remaining < result.remaining:
                    result = per_route
        result.raise_for_refusal()
        return result.raw_headers()

    async def _per_address(
        self, scope: Scope, service: str, limiter: RateLimiter
    ) -> RateLimitResult:
        address = self.trusted.client_address(scope)
        route_limit = self.route_limits.get(service)
        if route_limit is None:
            return await limiter.hit(self.api_limit, "gateway", "api", address, name="api")
        return await limiter.hit(route_limit, "gateway", service, address, name=service)

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
            # The reason is for the log only, as in every service: told to the client, it
            # would guide a forger ("expired" means the signature passed).
            security_log.warning(
                "security.bad_token",
                outcome="refused",
                reason=exc.reason,
                client=self.trusted.client_address(scope),
                path=scope["path"],
            )
            raise InvalidAccessToken("The access token is not valid.") from None
        except KeysUnavailable:
            raise ServiceUnavailable(
                "Access tokens cannot be checked right now; try again shortly."
            ) from None
        scope["state"]["principal"] = principal
        return principal
