"""The storefront's calls to the API.

The pages call the services the way the gateway proxies a browser's API call: on the
gateway's pooled upstream sessions, through each instance's circuit breaker, with the
request's id and the client's address (``X-Forwarded-For``), so the services' own rules
(validation, ownership, roles, login limits per address) apply to the pages unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from starlette.requests import Request

from mercato.gateway.upstreams import Upstream
from mercato.platform.middleware import request_id_var
from mercato.platform.net import TrustedProxies
from mercato.platform.resilience import CircuitOpenError

#: Answers that say the upstream, not the request, is at fault.
_UNHEALTHY: Final = frozenset({502, 503, 504})


class ApiUnavailable(Exception):
    """A service gave no usable answer; the page answers 503."""

    def __init__(self, service: str, retry_after: float = 5.0) -> None:
        super().__init__(f"the {service} service is unavailable")
        self.service = service
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class ApiAnswer:
    status: int
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def detail(self) -> str:
        """The problem's ``detail`` (or ``title``), for showing to the user."""
        if isinstance(self.body, dict):
            return str(self.body.get("detail") or self.body.get("title") or "")
        return ""

    def field_errors(self) -> dict[str, str]:
        """A 422's ``errors`` by field name, first message wins, worded for a person
        (``Value error, needs a digit`` -> ``Needs a digit``)."""
        errors: dict[str, str] = {}
        if isinstance(self.body, dict):
            for error in self.body.get("errors") or ():
                message = str(error.get("msg") or "is not valid").removeprefix("Value error, ")
                message = _PYDANTIC_SUBJECT.sub("Must ", message)
                errors.setdefault(
                    field_of(error.get("loc") or []), message[:1].upper() + message[1:]
                )
        return errors


#: How pydantic begins a message, which a person reads better as an instruction
#: (``String should have at least 8 characters`` -> ``Must have at least 8 characters``).
_PYDANTIC_SUBJECT: Final = re.compile(r"^(?:String|Input|Value) should ")

#: What pydantic puts in a ``loc`` after the field: the branch of a union (``none``,
#: ``function-after[...]``), never a field name of the API.
_UNION_BRANCH: Final = re.compile(r"none|.*[\[\-].*")


def field_of(loc: list[Any]) -> str:
    """The form field an error's ``loc`` names: its last name that is neither the part of
    the request (``body``), an index (``items.0.quantity`` -> ``quantity``) nor a union's
    branch (``price.function-after[...]`` -> ``price``)."""
    names = [
        part for part in loc[1:] if isinstance(part, str) and not _UNION_BRANCH.fullmatch(part)
    ]
    return names[-1] if names else str(loc[-1]) if loc else "body"


class ApiClient:
    """``await api.call(request, "GET", "/products/42")``: one call to one service, as the
    page's visitor (``token``) and on behalf of the browser that sent ``request``."""

    def __init__(self, upstreams: Mapping[str, Upstream], trusted: TrustedProxies) -> None:
        self.upstreams = upstreams
        self.trusted = trusted

    async def call(
        self,
        request: Request,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json_body: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ApiAnswer:
        service = path.split("/", 2)[1]
        upstream = self.upstreams[service]
        try:
            instance, permit = upstream.choose()
        except CircuitOpenError as refused:
            raise ApiUnavailable(service, refused.retry_after) from refused
        sent = {
            "Accept": "application/json",
            "X-Forwarded-For": self.trusted.forwarded_for(request.scope),
            "X-Forwarded-Proto": request.url.scheme,
            **(headers or {}),
        }
        if request_id := request_id_var.get():
            sent["X-Request-ID"] = request_id
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        data = None
        if json_body is not None:
            data = json.dumps(json_body).encode()
            sent["Content-Type"] = "application/json"
        url = instance.base.with_path(path)
        if params:
            url = url.with_query({k: str(v) for k, v in params.items()})
        try:
            async with upstream.session.request(
                method, url, headers=sent, data=data, allow_redirects=False
            ) as response:
                raw = await response.read()
                status = response.status
                answer_headers = dict(response.headers)
        except (aiohttp.ClientError, TimeoutError) as broken:
            permit.failure()
            raise ApiUnavailable(service) from broken
        except BaseException:
            permit.release()
            raise
        if status in _UNHEALTHY:
            permit.failure()
            raise ApiUnavailable(service)
        permit.success()
        body = json.loads(raw) if raw and _is_json(answer_headers) else None
        return ApiAnswer(status, body, answer_headers)


def _is_json(headers: Mapping[str, str]) -> bool:
    content_type = headers.get("Content-Type", "")
    return content_type.startswith("application/") and "json" in content_type
