"""``CurrentUser`` and ``AdminUser``: every service verifies bearer tokens itself.

A missing or refused token answers 401 problem+json with ``WWW-Authenticate: Bearer``; a
valid token without the role answers 403. ``AdminUser`` names its role as a scope of the
operation's security requirement (OpenAPI 3.1: ``security: [{"bearer": ["admin"]}]``), so
the schema itself says which operations are for administrators (the security suite derives
its function-level authorization checks from it). The verifier is the service context's
``tokens`` (built in the lifespan from settings, see :func:`.tokens.token_verifier`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, Final

import structlog
from fastapi import Depends, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.security import HTTPBearer, OAuth2PasswordBearer
from fastapi.security.base import SecurityBase

from mercato.platform.errors import Forbidden, ServiceUnavailable, Unauthorized
from mercato.platform.net import TrustedProxies
from mercato.platform.security.tokens import InvalidToken, KeysUnavailable, Principal
from mercato.platform.settings import SharedSettings

if TYPE_CHECKING:
    from mercato.platform.app import ServiceContext

security_log = structlog.stdlib.get_logger("mercato.security")

#: Where the ``/docs`` Authorize button posts the OAuth2 password form: the auth service's
#: own path; the gateway's merged OpenAPI puts it under ``/api/v1``.
TOKEN_URL: Final = "/auth/token"  # noqa: S105 - a path, not a secret

bearer_scheme = OAuth2PasswordBearer(
    tokenUrl=TOKEN_URL,
    scheme_name="bearer",
    description="An access token from `POST /api/v1/auth/login` or `/api/v1/auth/token`.",
    scopes={"admin": "Administrators only: the token must carry the `admin` role."},
    auto_error=False,
)
#: The same header, declared a second way so that ``/docs`` also takes a pasted token
#: (a service's own ``/docs`` has no token endpoint of its own). Only in the document
#: (:func:`document_pasted_token`): as a dependency FastAPI would resolve it again on every
#: request, for a value nothing reads.
pasted_bearer = HTTPBearer(
    scheme_name="bearerToken",
    description="Paste an access token.",
    auto_error=False,
)


def document_pasted_token(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (changed in place and returned) with ``bearerToken`` beside every
    ``bearer`` security requirement, with the same scopes, and among the schemes."""
    name, bearer = pasted_bearer.scheme_name, bearer_scheme.scheme_name
    secured = False
    for item in document.get("paths", {}).values():
        for operation in item.values():
            requirements = operation.get("security") if isinstance(operation, dict) else None
            if not requirements:
                continue
            for index, requirement in enumerate(requirements):
                if bearer in requirement:
                    requirements.insert(index + 1, {name: requirement[bearer]})
                    secured = True
                    break
    if secured:
        schemes = document.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes[name] = jsonable_encoder(pasted_bearer.model, by_alias=True, exclude_none=True)
    return document


@lru_cache(maxsize=16)
def _proxies(networks: tuple[str, ...]) -> TrustedProxies:
    return TrustedProxies(networks)


def client_address(request: Request, settings: SharedSettings) -> str:
    """The client's address as a backend service sees it: ``X-Forwarded-For`` is believed
    only from ``TRUSTED_PROXIES`` and ``INTERNAL_PROXIES`` (the gateway)."""
    networks = (*settings.trusted_proxies, *settings.internal_proxies)
    return _proxies(networks).client_address(request.scope)


class BearerPrincipal(SecurityBase):
    """The ``bearer`` scheme as the dependency itself: the principal of the request's
    verified bearer token (OpenAPI shows the scheme, with an ``AdminUser``'s scopes).

    Each dependency is one more round of FastAPI's solving on every authenticated request;
    a function depending on the scheme would be two, and a ``Context`` dependency three."""

    def __init__(self, scheme: OAuth2PasswordBearer) -> None:
        self.scheme = scheme
        self.model = scheme.model
        self.scheme_name = scheme.scheme_name

    async def __call__(self, request: Request) -> Principal:
        return await current_principal(request, await self.scheme(request))


async def current_principal(request: Request, token: str | None) -> Principal:
    """The principal ``token`` (the request's bearer token, if any) names; 401 if none."""
    context: ServiceContext = request.app.state.context
    if context.tokens is None:
        raise RuntimeError(f"the {context.service} service has no token verifier")
    if not token:
        raise Unauthorized("A bearer access token is required.")
    try:
        principal = await context.tokens.verify(token)
    except InvalidToken as exc:
        security_log.warning(
            "security.bad_token",
            outcome="refused",
            reason=exc.reason,
            client=client_address(request, context.settings),
            path=request.url.path,
        )
        raise Unauthorized("The access token is invalid or expired.") from None
    except KeysUnavailable:
        raise ServiceUnavailable(
            "Tokens cannot be verified right now.", dependency="upstream service"
        ) from None
    request.state.principal = principal
    return principal


CurrentUser = Annotated[Principal, Depends(BearerPrincipal(bearer_scheme))]


def require_role(role: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that lets only principals holding ``role`` through (else 403)."""

    async def check(principal: CurrentUser) -> Principal:
        if not principal.has_role(role):
            raise Forbidden(f"This needs the {role!r} role.")
        return principal

    return check


#: ``Security`` rather than ``Depends``: the same check, with ``admin`` listed as the scope
#: of every security requirement of the operation in OpenAPI.
AdminUser = Annotated[Principal, Security(require_role("admin"), scopes=["admin"])]
