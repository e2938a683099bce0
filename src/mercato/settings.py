"""The whole configuration of a Mercato process: the kernel's shared settings, the service
topology (which services there are, where each listens and is reached) and every context's
own settings, combined into one flat :class:`Settings`.

This module sits above the contexts, as ``cli.py`` and ``serving.py`` do: the kernel
(``mercato.platform``) knows no service by name, and each context declares only its own
settings, next to its code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from mercato.auth.settings import AuthSettings
from mercato.gateway.settings import GatewaySettings
from mercato.orders.settings import OrdersSettings
from mercato.platform import settings_sources
from mercato.platform.settings import (
    BlankIsUnset,
    ConfigError,
    SharedSettings,
    check_server_url,
    server_url,
)
from mercato.products.settings import ProductsSettings
from mercato.storefront.settings import StorefrontSettings
from mercato.users.settings import UsersSettings

ServiceName = Literal["gateway", "auth", "users", "products", "orders"]

#: The four backend services, in the order `mercato up` starts them.
BACKEND_SERVICES: Final[tuple[ServiceName, ...]] = ("auth", "users", "products", "orders")
SERVICES: Final[tuple[ServiceName, ...]] = (*BACKEND_SERVICES, "gateway")

#: Where the auth service publishes the public keys of the tokens it signs.
JWKS_PATH: Final = "/auth/.well-known/jwks.json"


def _join_list(value: Any) -> Any:
    """A config file may list a service's instances; the setting is comma-separated."""
    return ",".join(map(str, value)) if isinstance(value, list) else value


def _check_service_urls(value: str | None) -> str | None:
    for url in (value or "").split(","):
        if url.strip():
            check_server_url(url.strip(), ("http", "https"), "http://products.internal:8003")
    return value


#: One or more (comma-separated) base URLs of one service's instances.
ServiceUrls = Annotated[
    BlankIsUnset, BeforeValidator(_join_list), AfterValidator(_check_service_urls)
]


class ServicesSettings(SharedSettings):
    """Which port each service listens on and where the others reach it."""

    port: int = Field(8000, ge=1, le=65535, description="gateway port")
    auth_port: int = Field(8004, ge=1, le=65535, description="auth service port")
    users_port: int = Field(8001, ge=1, le=65535, description="users service port")
    products_port: int = Field(8003, ge=1, le=65535, description="products service port")
    orders_port: int = Field(8002, ge=1, le=65535, description="orders service port")
    auth_url: ServiceUrls = Field(None, description="auth base URL; unset: from AUTH_PORT")
    users_url: ServiceUrls = Field(None, description="users base URL; unset: from USERS_PORT")
    products_url: ServiceUrls = Field(
        None, description="products base URL; unset: from PRODUCTS_PORT"
    )
    orders_url: ServiceUrls = Field(None, description="orders base URL; unset: from ORDERS_PORT")
    jwks_url: Annotated[
        BlankIsUnset,
        server_url("http", "https", example="http://auth.internal:8004/auth/.well-known/jwks.json"),
    ] = Field(None, description="default: AUTH_URL + /auth/.well-known/jwks.json")

    def service_port(self, service: ServiceName) -> int:
        port: int = getattr(self, "port" if service == "gateway" else f"{service}_port")
        return port

    def service_urls(self, service: ServiceName) -> list[str]:
        """Every instance of ``service``: its ``*_URL`` (comma-separated for several) or one
        URL derived from its port."""
        explicit: str | None = getattr(self, f"{service}_url", None)
        if explicit:
            return [url.strip().rstrip("/") for url in explicit.split(",") if url.strip()]
        # Not a bind (bandit B104): a wildcard listen address is reached on loopback.
        host = "127.0.0.1" if self.host in {"0.0.0.0", "::", ""} else self.host  # nosec B104
        if ":" in host:
            host = f"[{host}]"
        return [f"http://{host}:{self.service_port(service)}"]

    def service_url(self, service: ServiceName) -> str:
        """Where other processes reach ``service`` (the first instance when several are set;
        the gateway balances over all of them)."""
        return self.service_urls(service)[0]

    def token_keys_url(self) -> str:
        return self.jwks_url or self.service_url("auth") + JWKS_PATH

    def problems(self, services: Sequence[ServiceName] = SERVICES) -> list[str]:
        """What makes these settings unfit to run ``services``; empty when they are fine."""
        found: list[str] = []
        by_port: dict[int, list[ServiceName]] = {}
        for service in services:
            by_port.setdefault(self.service_port(service), []).append(service)
        for port, sharing in by_port.items():
            if len(sharing) > 1:
                names = " and ".join(_port_setting(service) for service in sharing)
                found.append(f"{names} share port {port}; each process needs a port of its own")
        return found + self.shared_problems(signs_tokens="auth" in services)

    def check(self, services: Sequence[ServiceName] = SERVICES) -> None:
        """Raise :class:`ConfigError` when :meth:`problems` finds anything."""
        if found := self.problems(services):
            raise ConfigError(found)


def _port_setting(service: ServiceName) -> str:
    return "PORT" if service == "gateway" else f"{service.upper()}_PORT"


class Settings(
    StorefrontSettings,
    GatewaySettings,
    OrdersSettings,
    ProductsSettings,
    UsersSettings,
    AuthSettings,
    ServicesSettings,
):
    """Every setting of every Mercato process, validated once at start-up."""

    @classmethod
    def of(cls, settings: SharedSettings) -> Settings:
        """``settings`` (a service's, which the kernel holds as :class:`SharedSettings`)
        as the whole settings the process loaded, its context's own included."""
        if not isinstance(settings, cls):
            raise TypeError(f"{type(settings).__name__} is not the whole {cls.__name__}")
        return settings


def load_settings(
    config_file: Path | str | None = None,
    *,
    env_file: Path | str | None = ".env",
    **overrides: Any,
) -> Settings:
    """Build the settings from every source; ``overrides`` are the explicit arguments.

    Raises :class:`ConfigError` for an unreadable config file or invalid values (one line
    per problem, never echoing a secret's value).
    """
    return settings_sources.load(Settings, config_file, env_file=env_file, **overrides)


def env_file_warnings(env_file: Path | str | None = ".env") -> list[str]:
    """One line per name in ``env_file`` that sets nothing, with the closest setting."""
    return settings_sources.env_file_warnings(Settings, env_file)


def setting_sources(
    config_file: Path | str | None = None, *, env_file: Path | str | None = ".env"
) -> dict[str, str]:
    """Name the source each setting's effective value came from (for `config show`)."""
    return settings_sources.setting_sources(Settings, config_file, env_file=env_file)


def derived_values(settings: Settings) -> dict[str, Any]:
    """Effective values that are computed when unset: service URLs, per-service databases."""
    values: dict[str, Any] = {"log_level": settings.effective_log_level}
    for service in BACKEND_SERVICES:
        values[f"{service}_url"] = settings.service_url(service)
        values[f"{service}_database_url"] = settings.database_url_for(service)
    return values
