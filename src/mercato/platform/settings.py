"""Typed configuration for every Mercato process.

Sources, highest precedence first: explicit arguments, environment variables, a ``.env``
file, a config file (``MERCATO_CONFIG`` or ``--config``; YAML, JSON, TOML or INI), a secrets
directory (``SECRETS_DIR``, default ``/run/secrets``, one file per setting), then the
defaults of the active profile (``ENVIRONMENT``).

Names are the conventional unprefixed ones (``DATABASE_URL``, ``PORT``...). Settings are
grouped by concern in mixins and combined into one flat :class:`Settings`, so every name
stays what a newcomer expects while each concern is read on its own.
"""

from __future__ import annotations

import configparser
import ipaddress
import json
import os
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

Environment = Literal["development", "testing", "production"]
ServiceName = Literal["gateway", "auth", "users", "products", "orders"]

#: The four backend services, in the order `mercato up` starts them.
BACKEND_SERVICES: Final[tuple[ServiceName, ...]] = ("auth", "users", "products", "orders")
SERVICES: Final[tuple[ServiceName, ...]] = (*BACKEND_SERVICES, "gateway")

#: The well-known development key. Production refuses to start with it.
INSECURE_SECRET_KEY: Final = "insecure-development-key-change-me"  # noqa: S105

CONFIG_SECTION: Final = "mercato"
MASK: Final = "********"
_SECRET_NAME_PARTS: Final = ("secret", "password", "token", "private_key")

CommaList = Annotated[list[str], NoDecode]


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` has one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


# --- concerns ---------------------------------------------------------------------------


class RuntimeSettings(BaseSettings):
    environment: Environment = Field(
        "development", description="development, testing or production: picks the profile"
    )
    debug: bool = Field(False, description="verbose logs; refused in production")
    data_dir: Path = Field(
        Path("./var"), description="where embedded data lives (SQLite files, dev keys, mail)"
    )
    secret_key: SecretStr | None = Field(
        None, description="secret for signing (CSRF, sessions); >= 32 random chars in production"
    )


class ServerSettings(BaseSettings):
    host: str = Field("127.0.0.1", description="interface every process listens on")
    port: int = Field(8000, ge=1, le=65535, description="gateway port")
    auth_port: int = Field(8004, ge=1, le=65535, description="auth service port")
    users_port: int = Field(8001, ge=1, le=65535, description="users service port")
    products_port: int = Field(8003, ge=1, le=65535, description="products service port")
    orders_port: int = Field(8002, ge=1, le=65535, description="orders service port")
    auth_url: str | None = Field(None, description="auth base URL; unset: from AUTH_PORT")
    users_url: str | None = Field(None, description="users base URL; unset: from USERS_PORT")
    products_url: str | None = Field(
        None, description="products base URL; unset: from PRODUCTS_PORT"
    )
    orders_url: str | None = Field(None, description="orders base URL; unset: from ORDERS_PORT")
    allowed_hosts: CommaList = Field(
        default_factory=list, description="host names the gateway answers to (comma-separated)"
    )
    cors_origins: CommaList = Field(
        default_factory=list, description="origins allowed by CORS (comma-separated; no *)"
    )
    trusted_proxies: CommaList = Field(
        default_factory=list,
        description="proxy addresses/networks whose X-Forwarded-For is believed",
    )
    docs_enabled: bool | None = Field(None, description="serve /docs (Swagger UI)")
    access_log: bool = Field(True, description="one log line per request")
    graceful_timeout: float = Field(10.0, gt=0, description="seconds to drain on shutdown")
    service_max_body_size: int = Field(
        1024 * 1024,
        ge=1,
        description="bytes of request body a backend service accepts; larger bodies get 413",
    )

    _split = field_validator("allowed_hosts", "cors_origins", "trusted_proxies", mode="before")(
        _split_commas
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value


class LoggingSettings(BaseSettings):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] | None = Field(
        None, description="DEBUG, INFO, WARNING, ERROR or CRITICAL (INFO; DEBUG with DEBUG=true)"
    )
    log_format: Literal["json", "console"] | None = Field(
        None, description="json (one JSON object a line) or console (readable)"
    )
    log_file: Path | None = Field(None, description="also write JSON lines to this file")
    log_rotate: str = Field("10MB", description="size (10MB) or time (midnight, h, d)")
    log_backups: int = Field(7, ge=0, description="rotated log files kept")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class DatabaseSettings(BaseSettings):
    database_url: str | None = Field(
        None, description="shared database (postgresql+asyncpg://...); unset: SQLite per service"
    )
    auth_database_url: str | None = Field(
        None, description="the auth service's own database, over DATABASE_URL"
    )
    users_database_url: str | None = Field(
        None, description="the users service's own database, over DATABASE_URL"
    )
    products_database_url: str | None = Field(
        None, description="the products service's own database, over DATABASE_URL"
    )
    orders_database_url: str | None = Field(
        None, description="the orders service's own database, over DATABASE_URL"
    )
    database_pool_size: int = Field(10, ge=1, description="connections per service pool")
    database_echo: bool = Field(False, description="log every SQL statement")
    auto_migrate: bool | None = Field(None, description="apply migrations at start-up")


class CacheSettings(BaseSettings):
    redis_url: str | None = Field(
        None, description="Redis for cache and shared rate limits; unset: in-process memory"
    )
    cache_max_entries: int = Field(
        10_000, ge=1, description="entries kept by the in-memory cache (LRU)"
    )
    cache_default_ttl: float = Field(300.0, gt=0, description="seconds a cache entry lives")


class BrokerSettings(BaseSettings):
    broker_url: str | None = Field(
        None, description="amqp:// (RabbitMQ) or kafka://; unset: in-process broker"
    )


class ProductsSettings(BaseSettings):
    """The catalogue: its caches and its demo data (see README, "Products and caching")."""

    products_cache_enabled: bool = Field(True, description="cache-aside on product reads")
    products_cache_ttl: float = Field(300.0, gt=0, description="seconds a cached read lives")
    products_local_cache_ttl: float = Field(
        0.0,
        ge=0,
        description="with REDIS_URL: seconds a read also lives in each instance's memory, "
        "dropped on every instance by broadcast on writes (0: no local layer)",
    )
    product_max_age: int = Field(60, ge=0, description="Cache-Control max-age of one product")
    product_list_max_age: int = Field(30, ge=0, description="Cache-Control max-age of lists")
    seed_demo_catalogue: bool | None = Field(
        None, description="seed an empty catalogue at start-up (default: in development)"
    )


class OrdersSettings(BaseSettings):
    """Orders, service-to-service calls and notifications (see README, "Orders")."""

    service_call_timeout: float = Field(5.0, gt=0, description="seconds per call to a service")
    service_call_connect_timeout: float = Field(1.0, gt=0, description="seconds to connect")
    service_call_retries: int = Field(2, ge=0, le=5, description="extra tries, idempotent calls")
    service_call_backoff: float = Field(0.05, gt=0, description="first retry delay, seconds")
    service_call_backoff_max: float = Field(1.0, gt=0, description="longest retry delay")
    service_call_pool_size: int = Field(100, ge=1, description="connections per upstream")
    circuit_failure_threshold: int = Field(5, ge=1, description="failures that open a breaker")
    circuit_reset_timeout: float = Field(10.0, gt=0, description="seconds before a trial call")
    idempotency_key_ttl: float = Field(
        86_400.0, ge=86_400, description="seconds an Idempotency-Key is kept (at least 24 h)"
    )
    idempotency_lock_timeout: float = Field(
        60.0, gt=0, description="seconds before an in-flight key of a crashed request is retaken"
    )
    idempotency_prune_interval: float = Field(
        600.0, gt=0, description="seconds between deletions of expired keys"
    )
    smtp_url: str | None = Field(
        None, description="smtp://user:pass@host:port (smtps:// for TLS); unset: .eml files"
    )
    mail_from: str = Field("Mercato <orders@mercato.invalid>", description="notification sender")
    notifications_in_process: bool = Field(
        True, description="run the notification worker inside the orders service"
    )


class MessagingSettings(BaseSettings):
    """Events: outbox relay, consumers, retries (see README, "Events and guarantees")."""

    messaging_max_attempts: int = Field(5, ge=1, description="handler tries before dead letter")
    messaging_retry_backoff: float = Field(0.5, gt=0, description="first retry delay, seconds")
    messaging_retry_backoff_max: float = Field(30.0, gt=0, description="longest retry delay")
    messaging_prefetch: int = Field(16, ge=1, description="unacked messages per consumer")
    messaging_queue_type: Literal["classic", "quorum"] = Field(
        "classic", description="RabbitMQ queue type: classic on one node, quorum on a cluster"
    )
    messaging_exchange: str = Field(
        "mercato.events", min_length=1, description="topic exchange (Kafka: topic) of the events"
    )
    outbox_poll_interval: float = Field(1.0, gt=0, description="relay safety-net poll, seconds")
    outbox_batch_size: int = Field(200, ge=1, description="outbox rows the relay sends at once")
    outbox_retention: float = Field(7 * 86_400.0, ge=0, description="keep sent rows, seconds")
    inbox_retention: float = Field(30 * 86_400.0, ge=0, description="dedupe window, seconds")
    messaging_startup_grace: float = Field(
        5.0, ge=0, description="memory broker: seconds it keeps events for late subscribers"
    )


class GatewaySettings(BaseSettings):
    """The front door: routes, upstream timeouts and breakers, limits, headers (see README,
    "Gateway")."""

    upstream_timeout: float = Field(10.0, gt=0, description="seconds to wait for an upstream")
    upstream_connect_timeout: float = Field(
        2.0, gt=0, description="seconds to connect to an upstream"
    )
    upstream_pool_size: int = Field(100, ge=1, description="connections per upstream")
    max_body_size: int = Field(1024 * 1024, ge=1, description="bytes; larger bodies get 413")
    gateway_routes: dict[str, list[str]] = Field(
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
    rate_limit_api: str = Field(
        "600/minute",
        description="per client address at the gateway (requests without a valid token)",
    )
    rate_limit_user: str = Field(
        "1200/minute", description="per signed-in user at the gateway (instead of per address)"
    )
    rate_limit_routes: dict[str, str] = Field(
        default_factory=dict,
        description='JSON {"auth": "120/minute"}: per-client limit of one route group',
    )
    auth_offload: bool = Field(True, description="verify bearer tokens at the gateway")
    content_security_policy: str = Field(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'",
        description="on every gateway answer that sets none (pages with a nonce set their own)",
    )
    referrer_policy: str = Field(
        "strict-origin-when-cross-origin", description="on every gateway answer"
    )

    @field_validator("rate_limit_api", "rate_limit_user")
    @classmethod
    def _valid_gateway_limit(cls, value: str) -> str:
        return _check_rate_limit(value)

    @field_validator("rate_limit_routes")
    @classmethod
    def _valid_route_limits(cls, value: dict[str, str]) -> dict[str, str]:
        return {group: _check_rate_limit(limit) for group, limit in value.items()}

    @field_validator("gateway_routes", mode="before")
    @classmethod
    def _split_route_urls(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {name: _split_commas(urls) for name, urls in value.items()}
        return value

    @field_validator("gateway_routes")
    @classmethod
    def _valid_routes(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for service, urls in value.items():
            if not urls or any(urlsplit(url).scheme not in {"http", "https"} for url in urls):
                raise ValueError(f"route {service!r} needs one or more http(s) URLs")
        return value


def _check_rate_limit(value: str) -> str:
    from limits import parse_many

    try:
        parse_many(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a rate limit such as '600/minute'") from None
    return value


class SecuritySettings(BaseSettings):
    """Tokens, passwords, login limits and the bootstrap administrator (see README,
    "Authentication")."""

    jwt_issuer: str = Field("mercato", min_length=1, description="`iss` of access tokens")
    jwt_audience: str = Field("mercato", min_length=1, description="`aud` of access tokens")
    access_token_ttl: int = Field(900, ge=30, le=86_400, description="seconds")
    refresh_token_ttl: int = Field(14 * 86_400, ge=60, description="seconds")
    jwt_leeway: float = Field(30.0, ge=0, le=30, description="clock skew, seconds")
    jwt_private_keys: SecretStr | None = Field(
        None, description="PEM private keys (Ed25519 or RSA); the first one signs"
    )
    jwt_private_keys_file: Path | None = Field(
        None,
        description="file of PEM private keys; default DATA_DIR/jwt-keys.pem outside production",
    )
    jwt_public_keys: str | None = Field(
        None, description="a JWKS document or PEM public keys to verify with, instead of JWKS_URL"
    )
    jwks_url: str | None = Field(
        None, description="default: AUTH_URL + /auth/.well-known/jwks.json"
    )
    jwks_cache_ttl: float = Field(300.0, gt=0, description="seconds between JWKS refreshes")
    jwks_min_refetch_interval: float = Field(
        10.0, ge=0, description="at most one JWKS fetch per this many seconds on an unknown kid"
    )
    token_cache_size: int = Field(10_000, ge=0, description="verified tokens kept in memory")
    # OWASP's first Argon2id choice (19 MiB, 2 passes, 1 lane): about 80 ms a hash on one
    # core; RFC 9106's 64 MiB x 3 x 4 took 0.5 s here, a login denial-of-service lever.
    argon2_time_cost: int = Field(2, ge=1, description="Argon2id passes (default 2)")
    argon2_memory_cost: int = Field(
        19_456, ge=8, description="Argon2id memory, KiB (default 19456)"
    )
    argon2_parallelism: int = Field(1, ge=1, description="Argon2id lanes (default 1)")
    rate_limit_login: str = Field(
        "5/minute", description="login attempts per username and client address"
    )
    rate_limit_login_address: str = Field(
        "30/minute", description="login attempts per client address, whatever the username"
    )
    rate_limit_prefix: str = Field(
        "mercato-ratelimit", min_length=1, description="prefix of the rate-limit keys in Redis"
    )
    rate_limit_fail_closed: bool = Field(
        True, description="refuse (503) rather than allow when the limit storage is down"
    )
    internal_proxies: CommaList = Field(
        default_factory=list,
        description="peers (the gateway) whose X-Forwarded-For a backend service believes,"
        " besides TRUSTED_PROXIES; default none (`mercato up` adds its own gateway)",
    )
    admin_username: str | None = Field(
        None,
        validation_alias=AliasChoices("mercato_admin_username", "admin_username"),
        description="with MERCATO_ADMIN_PASSWORD: ensure this admin exists at start-up",
    )
    admin_password: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("mercato_admin_password", "admin_password"),
        description="the bootstrap admin's password (used only when the user is created)",
    )

    _split_proxies = field_validator("internal_proxies", mode="before")(_split_commas)

    @field_validator("internal_proxies")
    @classmethod
    def _valid_proxy_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value

    @field_validator("rate_limit_login", "rate_limit_login_address")
    @classmethod
    def _valid_limit(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate limit such as '5/minute'") from None
        return value


class Settings(
    OrdersSettings,
    ProductsSettings,
    SecuritySettings,
    GatewaySettings,
    MessagingSettings,
    BrokerSettings,
    CacheSettings,
    DatabaseSettings,
    LoggingSettings,
    ServerSettings,
    RuntimeSettings,
):
    """Every setting of every Mercato process, validated once at start-up."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        config_file = _config_file.get()
        if config_file is not None:
            sources.append(ConfigFileSource(settings_cls, config_file))
        sources.append(file_secret_settings)
        return tuple(sources)

    @model_validator(mode="after")
    def _apply_profile(self) -> Settings:
        """Fill what no source set with the active environment's defaults."""
        for name, value in PROFILES[self.environment].items():
            if name not in self.model_fields_set:
                object.__setattr__(self, name, value)
        return self

    # --- derived values ----------------------------------------------------------------

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @property
    def effective_log_level(self) -> str:
        return self.log_level or ("DEBUG" if self.debug else "INFO")

    def service_port(self, service: ServiceName) -> int:
        port: int = getattr(self, "port" if service == "gateway" else f"{service}_port")
        return port

    def service_urls(self, service: ServiceName) -> list[str]:
        """Every instance of ``service``: its ``*_URL`` (comma-separated for several) or one
        URL derived from its port."""
        explicit: str | None = getattr(self, f"{service}_url", None)
        if explicit:
            return [url.strip().rstrip("/") for url in explicit.split(",") if url.strip()]
        host = "127.0.0.1" if self.host in {"0.0.0.0", "::", ""} else self.host
        if ":" in host:
            host = f"[{host}]"
        return [f"http://{host}:{self.service_port(service)}"]

    def service_url(self, service: ServiceName) -> str:
        """Where other processes reach ``service`` (the first instance when several are set;
        the gateway balances over all of them)."""
        return self.service_urls(service)[0]

    def database_url_for(self, service: ServiceName) -> str:
        """The service's own database: its override, the shared URL, or an embedded SQLite."""
        override: str | None = getattr(self, f"{service}_database_url", None)
        if override:
            return override
        if self.database_url:
            return self.database_url
        if self.environment == "testing":
            return "sqlite+aiosqlite:///:memory:"
        return f"sqlite+aiosqlite:///{self.data_dir / f'{service}.db'}"

    def problems(self) -> list[str]:
        """What makes these settings unfit to run; empty when they are fine."""
        found: list[str] = []
        if self.is_production:
            key = self.secret_key.get_secret_value() if self.secret_key else ""
            if not key:
                found.append("SECRET_KEY is not set; production needs a random secret key")
            elif key == INSECURE_SECRET_KEY:
                found.append("SECRET_KEY is the development default; set a random secret key")
            elif len(key) < 32:
                found.append("SECRET_KEY is shorter than 32 characters")
            if self.debug:
                found.append("DEBUG=true is not allowed in production")
            if not self.allowed_hosts:
                found.append("ALLOWED_HOSTS is empty; list the host names this site answers to")
            if any("*" in host for host in self.allowed_hosts):
                found.append("ALLOWED_HOSTS contains a wildcard; list the host names explicitly")
            if "*" in self.cors_origins:
                found.append("CORS_ORIGINS contains '*'; list the allowed origins explicitly")
        return found

    def check(self) -> None:
        """Raise :class:`ConfigError` when :meth:`problems` finds anything."""
        if found := self.problems():
            raise ConfigError(found)


#: Per-environment defaults for what no source set. Production keeps no insecure default.
PROFILES: Final[dict[Environment, dict[str, Any]]] = {
    "development": {
        "log_format": "console",
        "allowed_hosts": ["*"],
        "secret_key": SecretStr(INSECURE_SECRET_KEY),
        "docs_enabled": True,
        "auto_migrate": True,
    },
    "testing": {
        "log_format": "console",
        "log_level": "WARNING",
        # Argon2 at its cheapest: tests hash many passwords (production keeps the defaults).
        "argon2_time_cost": 1,
        "argon2_memory_cost": 1024,
        "argon2_parallelism": 1,
        # Tests start their apps in order and wait with support.messaging.drain.
        "messaging_startup_grace": 0.0,
        "allowed_hosts": ["*"],
        "secret_key": SecretStr(INSECURE_SECRET_KEY),
        "docs_enabled": True,
        "auto_migrate": True,
    },
    "production": {
        "log_format": "json",
        "docs_enabled": False,
        "auto_migrate": False,
    },
}


# --- the config file source -------------------------------------------------------------

_config_file: ContextVar[Path | None] = ContextVar("mercato_config_file", default=None)


def read_config_file(path: Path) -> dict[str, Any]:
    """Read a YAML, JSON, TOML or INI file into a flat ``{setting: value}`` mapping.

    Settings sit at the top level or under a ``mercato`` section (the only choice for INI).
    """
    if not path.is_file():
        raise ConfigError([f"config file {path} does not exist"])
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        data: Any
        if suffix in {".yaml", ".yml"}:
            data = yaml.safe_load(text) or {}
        elif suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            data = tomllib.loads(text)
        elif suffix in {".ini", ".cfg", ".conf"}:
            parser = configparser.ConfigParser(interpolation=None)
            parser.read_string(text, source=str(path))
            if not parser.has_section(CONFIG_SECTION):
                raise ConfigError([f"config file {path} has no [{CONFIG_SECTION}] section"])
            data = dict(parser.items(CONFIG_SECTION))
        else:
            raise ConfigError(
                [f"config file {path}: unknown format {suffix!r} (use .yaml, .json, .toml, .ini)"]
            )
    except (yaml.YAMLError, json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([f"config file {path} cannot be parsed: {exc}"]) from None
    except configparser.Error as exc:
        raise ConfigError([f"config file {path} cannot be parsed: {exc}"]) from None
    if not isinstance(data, Mapping):
        raise ConfigError([f"config file {path} must hold a mapping of settings"])
    section = data.get(CONFIG_SECTION)
    if isinstance(section, Mapping):
        data = section
    return {str(key).lower(): value for key, value in data.items()}


class ConfigFileSource(PydanticBaseSettingsSource):
    """Settings from one config file; unknown names are an error, not a silent typo."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls)
        self.path = path
        self.values = read_config_file(path)
        known = _field_names(settings_cls)
        if unknown := sorted(set(self.values) - known):
            raise ConfigError([f"config file {path}: unknown setting {name!r}" for name in unknown])

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {
            key: _stringify_list(value) if isinstance(value, list) else value
            for key, value in self.values.items()
        }


def _stringify_list(value: list[Any]) -> str:
    return ",".join(str(item) for item in value)


def _field_names(settings_cls: type[BaseSettings]) -> set[str]:
    names: set[str] = set()
    for name, field in settings_cls.model_fields.items():
        names.add(name)
        if isinstance(field.validation_alias, str):
            names.add(field.validation_alias.lower())
        elif isinstance(field.validation_alias, AliasChoices):
            names.update(str(choice).lower() for choice in field.validation_alias.choices)
    return names


# --- loading ----------------------------------------------------------------------------


@contextmanager
def _using_config_file(path: Path | None) -> Iterator[None]:
    token = _config_file.set(path)
    try:
        yield
    finally:
        _config_file.reset(token)


def _resolve_config_file(config_file: Path | str | None) -> Path | None:
    chosen = config_file or os.environ.get("MERCATO_CONFIG")
    return Path(chosen) if chosen else None


def _secrets_dir() -> Path | None:
    path = Path(os.environ.get("SECRETS_DIR", "/run/secrets"))
    return path if path.is_dir() else None


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
    from pydantic import ValidationError

    path = _resolve_config_file(config_file)
    try:
        with _using_config_file(path):
            return Settings(_env_file=env_file, _secrets_dir=_secrets_dir(), **overrides)
    except ValidationError as exc:
        raise ConfigError(
            [
                f"{'.'.join(str(p) for p in err['loc']).upper() or 'settings'}: {err['msg']}"
                for err in exc.errors(include_input=False)
            ]
        ) from None


def setting_sources(
    config_file: Path | str | None = None, *, env_file: Path | str | None = ".env"
) -> dict[str, str]:
    """Name the source each setting's effective value came from (for `config show`)."""
    path = _resolve_config_file(config_file)
    labelled: list[tuple[str, Mapping[str, Any]]] = [
        ("environment", {k.lower(): v for k, v in os.environ.items()}),
    ]
    if env_file and Path(env_file).is_file():
        from dotenv import dotenv_values

        labelled.append((f"{env_file}", {k.lower(): v for k, v in dotenv_values(env_file).items()}))
    if path is not None:
        labelled.append((f"config file {path}", read_config_file(path)))
    secrets = _secrets_dir()
    if secrets is not None:
        labelled.append(
            (f"secrets dir {secrets}", {p.name.lower(): True for p in secrets.iterdir()})
        )
    environment = load_settings(path, env_file=env_file).environment
    found: dict[str, str] = {}
    for name in Settings.model_fields:
        found[name] = next(
            (label for label, values in labelled if name in values),
            f"{environment} profile" if name in PROFILES[environment] else "default",
        )
    return found


def derived_values(settings: Settings) -> dict[str, Any]:
    """Effective values that are computed when unset: service URLs, per-service databases."""
    values: dict[str, Any] = {"log_level": settings.effective_log_level}
    for service in BACKEND_SERVICES:
        values[f"{service}_url"] = settings.service_url(service)
        values[f"{service}_database_url"] = settings.database_url_for(service)
    return values


def is_secret_name(name: str) -> bool:
    return any(part in name.lower() for part in _SECRET_NAME_PARTS)


def mask_url(url: str) -> str:
    """Hide the password in a URL such as ``postgresql://user:pw@host/db``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:{MASK}@{parts.hostname or ''}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def masked_value(name: str, value: Any) -> Any:
    """The value as it may be shown to a person: secrets masked, URL passwords hidden."""
    if value is None:
        return None
    if isinstance(value, SecretStr) or is_secret_name(name):
        return MASK
    if isinstance(value, str) and "://" in value:
        return mask_url(value)
    if isinstance(value, Path):
        return str(value)
    return value
