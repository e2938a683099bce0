"""The gateway's settings: routes, upstream timeouts and breakers, limits, headers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_settings import BaseSettings

from mercato.platform.settings import check_rate_limit, rate_limit, split_commas


def _split_route_urls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {name: split_commas(urls) for name, urls in value.items()}
    return value


def _check_routes(value: dict[str, list[str]]) -> dict[str, list[str]]:
    for service, urls in value.items():
        if not urls or any(urlsplit(url).scheme not in {"http", "https"} for url in urls):
            raise ValueError(f"route {service!r} needs one or more http(s) URLs")
    return value


def _check_route_limits(value: dict[str, str]) -> dict[str, str]:
    return {group: check_rate_limit(limit, "600/minute") for group, limit in value.items()}


class GatewaySettings(BaseSettings):
    """The front door: routes, upstream timeouts and breakers, limits, headers (see README,
    "Gateway")."""

    upstream_timeout: float = Field(10.0, gt=0, description="seconds to wait for an upstream")
    upstream_connect_timeout: float = Field(
        2.0, gt=0, description="seconds to connect to an upstream"
    )
    upstream_pool_size: int = Field(100, ge=1, description="connections per upstream")
    max_body_size: int = Field(1024 * 1024, ge=1, description="bytes; larger bodies get 413")
    gateway_routes: Annotated[
        dict[str, list[str]], BeforeValidator(_split_route_urls), AfterValidator(_check_routes)
    ] = Field(
        default_factory=dict,
        description='JSON {"service": ["http://a:8003", "http://b:8003"]}; '
        "default: the four services' *_URL (comma-separated URLs are balanced)",
    )
    upstream_retries: int = Field(
        1,
        ge=0,
        le=5,
        description="extra tries on another instance: calls that never reached one, "
        "and idempotent calls whose connection broke",
    )
    upstream_fail_timeout: float = Field(
        10.0, gt=0, description="seconds a failing instance is skipped (breaker reset timeout)"
    )
    upstream_fail_threshold: int = Field(
        5, ge=1, description="consecutive failures that open an instance's breaker"
    )
    rate_limit_enabled: bool = Field(True, description="rate limits at the gateway")
    rate_limit_api: Annotated[str, rate_limit("600/minute")] = Field(
        "600/minute",
        description="per client address at the gateway (requests without a valid token)",
    )
    rate_limit_user: Annotated[str, rate_limit("600/minute")] = Field(
        "1200/minute", description="per signed-in user at the gateway (instead of per address)"
    )
    rate_limit_routes: Annotated[dict[str, str], AfterValidator(_check_route_limits)] = Field(
        default_factory=dict,
        description='JSON {"auth": "120/minute"}: per-client limit of one route group',
    )
    auth_offload: bool = Field(True, description="verify bearer tokens at the gateway")
    content_security_policy: str = Field(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
        description="on every gateway answer that sets none (pages with a nonce set their own)",
    )
    referrer_policy: str = Field(
        "strict-origin-when-cross-origin", description="on every gateway answer"
    )
