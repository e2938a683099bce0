"""Typed configuration: the concerns every Mercato service shares.

Sources, highest precedence first: explicit arguments, environment variables, a ``.env``
file, a config file (``MERCATO_CONFIG`` or ``--config``; YAML, JSON, TOML or INI), a secrets
directory (``SECRETS_DIR``, default ``/run/secrets``, one file per setting), then the
defaults of the active profile (``ENVIRONMENT``).

Names are the conventional unprefixed ones (``DATABASE_URL``, ``PORT``...). Settings are
grouped by concern in mixins; :class:`SharedSettings` combines the kernel's, each context
declares its own next to its code, and ``mercato.settings.Settings`` combines them all into
one flat class, so every name stays what a newcomer expects while each concern is read on
its own. The kernel never names a service: a service name is an opaque string to it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Literal, get_args
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

Environment = Literal["development", "testing", "production"]

#: Per-environment defaults for what no source set: ``{environment: {field: value}}``.
Profile = Mapping[Environment, Mapping[str, Any]]

#: The well-known development key. Production refuses to start with it.
INSECURE_SECRET_KEY: Final = "insecure-development-key-change-me"  # noqa: S105


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` has one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# --- what the settings' validators share --------------------------------------------------


def _none_if_blank(value: Any) -> Any:
    """``URL=`` (empty) means unset, as leaving it out does."""
    return None if isinstance(value, str) and not value.strip() else value


def split_commas(value: Any) -> Any:
    """``"a, b,"`` is ``["a", "b"]``; anything but a string is left to validation."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def check_server_url(url: str, schemes: tuple[str, ...], example: str) -> None:
    """Raise :class:`ValueError` unless ``url`` is a URL of one of ``schemes`` naming a
    host (a ``unix`` socket needs none) and, if any, a numeric port."""
    parts = urlsplit(url)
    if parts.scheme not in schemes:
        raise ValueError(
            f"{parts.scheme + '://' if parts.scheme else 'a URL without a scheme'} is not"
            f" supported; use {' or '.join(s + '://' for s in schemes)} (e.g. {example})"
        )
    if parts.scheme == "kafka":  # kafka://host:port[,host:port]: several servers
        if not parts.netloc:
            raise ValueError(f"names no host (e.g. {example})")
        return
    try:
        parts.port  # noqa: B018 - a non-numeric port raises here
    except ValueError:
        raise ValueError(f"has a port that is not a number (e.g. {example})") from None
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError(f"names no host (e.g. {example})")


def server_url(*schemes: str, example: str, accepted_as_is: tuple[str, ...] = ()) -> AfterValidator:
    """Validation of an optional URL setting: unset, a URL that starts with one of
    ``accepted_as_is``, or one of ``schemes`` as :func:`check_server_url` wants it."""

    def check(value: str | None) -> str | None:
        if value is not None and not value.startswith(accepted_as_is):
            check_server_url(value, schemes, example)
        return value

    return AfterValidator(check)


def check_rate_limit(value: str, example: str) -> str:
    """``value`` if it is a rate limit (``600/minute``...), else :class:`ValueError`."""
    from limits import parse_many

    try:
        parse_many(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a rate limit such as {example!r}") from None
    return value


def rate_limit(example: str) -> AfterValidator:
    """Validation of a rate-limit setting; the error quotes ``example``."""
    return AfterValidator(lambda value: check_rate_limit(value, example))


def _check_networks(value: list[str]) -> list[str]:
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return value


#: A list set as one comma-separated string (``a, b``) or as a list (config files).
CommaList = Annotated[list[str], NoDecode, BeforeValidator(split_commas)]
#: A comma-separated list of IP addresses or networks (CIDR).
Networks = Annotated[CommaList, AfterValidator(_check_networks)]
#: A setting for which a blank value means unset.
BlankIsUnset = Annotated[str | None, BeforeValidator(_none_if_blank)]


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
    allowed_hosts: CommaList = Field(
        default_factory=list, description="host names the gateway answers to (comma-separated)"
    )
    cors_origins: CommaList = Field(
        default_factory=list, description="origins allowed by CORS (comma-separated; no *)"
    )
    trusted_proxies: Networks = Field(
        default_factory=list,
        description="proxy addresses/networks whose X-Forwarded-For is believed",
    )
    docs_enabled: bool | None = Field(None, description="serve /docs (Swagger UI)")
    access_log: bool = Field(True, description="one log line per request")
    graceful_timeout: float = Field(10.0, gt=0, description="seconds to drain on shutdown")
    metrics_allowed_networks: Networks = Field(
        default_factory=lambda: [
            "127.0.0.0/8",
            "::1/128",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "fc00::/7",
        ],
        description="client networks /metrics answers (comma-separated CIDRs); others get 404."
        " Behind a reverse proxy, list it in TRUSTED_PROXIES so its clients are told apart",
    )
    max_header_bytes: int = Field(
        16 * 1024,
        ge=1024,
        description="bytes of a request's line and headers; a larger head gets 431",
    )
    request_read_timeout: float = Field(
        30.0,
        gt=0,
        description="seconds a client has to send a whole request (head and body); then 408",
    )
    keep_alive_timeout: int = Field(
        5, ge=1, description="seconds an idle keep-alive connection stays open"
    )
    max_connections: int = Field(
        1000, ge=1, description="concurrent connections per process; past it requests get 503"
    )
    service_max_body_size: int = Field(
        1024 * 1024,
        ge=1,
        description="bytes of request body a backend service accepts; larger bodies get 413",
    )

    startup_timeout: float = Field(
        30.0,
        gt=0,
        description="seconds start-up waits for the database, Redis and the broker to answer",
    )


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _check_rotation(value: str) -> str:
    from mercato.platform.logging import check_rotation

    return check_rotation(value)


class LoggingSettings(BaseSettings):
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] | None, BeforeValidator(_upper)
    ] = Field(
        None, description="DEBUG, INFO, WARNING, ERROR or CRITICAL (INFO; DEBUG with DEBUG=true)"
    )
    log_format: Literal["json", "console"] | None = Field(
        None, description="json (one JSON object a line) or console (readable)"
    )
    log_file: Path | None = Field(None, description="also write JSON lines to this file")
    log_rotate: Annotated[str, AfterValidator(_check_rotation)] = Field(
        "10MB", description="size (10MB) or time (midnight, h, d)"
    )
    log_backups: int = Field(7, ge=0, description="rotated log files kept")


#: What a URL's scheme may say, and the async driver Mercato uses for it.
_ASYNC_DRIVERS: Final = {
    "postgres": "postgresql+asyncpg",  # Heroku and others set postgres://
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


def async_database_url(url: str) -> str:
    """``url`` with the async driver Mercato uses (``postgresql://`` and ``postgres://``
    become ``postgresql+asyncpg://``, libpq's ``sslmode`` asyncpg's ``ssl``);
    :class:`ValueError` for anything else."""
    scheme, separator, rest = url.strip().partition("://")
    if not separator or not rest:
        raise ValueError(
            "is not a database URL such as postgresql://user:password@host:5432/name"
            " or sqlite:///path/to/file.db"
        )
    driver = _ASYNC_DRIVERS.get(scheme.lower())
    if driver is None:
        raise ValueError(
            f"{scheme}:// is not supported; use postgresql:// (asyncpg) or sqlite:// (aiosqlite)"
        )
    normalised = f"{driver}://{rest}"
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(normalised)
    except (ArgumentError, ValueError):
        raise ValueError(f"cannot be parsed as a {scheme}:// URL") from None
    if driver.startswith("postgresql") and not parsed.host and not parsed.query.get("host"):
        raise ValueError("names no host; use postgresql://user:password@host:5432/name")
    if driver.startswith("postgresql") and "sslmode" in parsed.query:
        # libpq's sslmode (what providers hand out) is asyncpg's ssl.
        mode = parsed.query["sslmode"]
        parsed = parsed.difference_update_query(["sslmode"]).update_query_dict({"ssl": mode})
        return parsed.render_as_string(hide_password=False)
    return normalised


#: A database URL setting, given the async driver (blank: unset). A context declares its
#: service's own database as ``<service>_database_url: DatabaseUrl`` (see ``database_url_for``).
DatabaseUrl = Annotated[
    BlankIsUnset, AfterValidator(lambda url: None if url is None else async_database_url(url))
]


class DatabaseSettings(BaseSettings):
    database_url: DatabaseUrl = Field(
        None, description="shared database (postgresql+asyncpg://...); unset: SQLite per service"
    )
    database_pool_size: int = Field(10, ge=1, description="connections per service pool")
    database_echo: bool = Field(False, description="log every SQL statement")
    auto_migrate: bool | None = Field(None, description="apply migrations at start-up")


class CacheSettings(BaseSettings):
    redis_url: Annotated[
        BlankIsUnset, server_url("redis", "rediss", "unix", example="redis://host:6379/0")
    ] = Field(None, description="Redis for cache and shared rate limits; unset: in-process memory")
    cache_max_entries: int = Field(
        10_000, ge=1, description="entries kept by the in-memory cache (LRU)"
    )
    cache_default_ttl: float = Field(300.0, gt=0, description="seconds a cache entry lives")


class BrokerSettings(BaseSettings):
    broker_url: Annotated[
        BlankIsUnset,
        server_url(
            "amqp",
            "amqps",
            "kafka",
            example="amqp://user:password@host:5672/",
            accepted_as_is=("memory:",),
        ),
    ] = Field(None, description="amqp:// (RabbitMQ) or kafka://; unset: in-process broker")


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
    messaging_lag_interval: float = Field(
        15.0, gt=0, description="seconds between samples of each consumer queue's length (lag)"
    )


class MailSettings(BaseSettings):
    """The mail Mercato sends (order notifications, password resets) and the site address
    its links point to (see README, "Orders" and "Authentication")."""

    smtp_url: Annotated[
        BlankIsUnset, server_url("smtp", "smtps", example="smtp://user:password@mail:587")
    ] = Field(None, description="smtp://user:pass@host:port (smtps:// for TLS); unset: .eml files")
    mail_from: str = Field(
        "Mercato <no-reply@mercato.invalid>", description="the sender of every mail"
    )
    public_url: Annotated[
        BlankIsUnset, server_url("http", "https", example="https://shop.example.com")
    ] = Field(
        None,
        description="the site's address as a browser reaches the gateway, for links in mail;"
        " unset: the gateway's own URL (from HOST and PORT)",
    )


class SecuritySettings(BaseSettings):
    """Tokens and rate-limit storage, as every service verifies and limits (see README,
    "Authentication")."""

    jwt_issuer: str = Field("mercato", min_length=1, description="`iss` of access tokens")
    jwt_audience: str = Field("mercato", min_length=1, description="`aud` of access tokens")
    access_token_ttl: int = Field(900, ge=30, le=86_400, description="seconds")
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
    jwks_cache_ttl: float = Field(300.0, gt=0, description="seconds between JWKS refreshes")
    jwks_min_refetch_interval: float = Field(
        10.0, ge=0, description="at most one JWKS fetch per this many seconds on an unknown kid"
    )
    token_cache_size: int = Field(10_000, ge=0, description="verified tokens kept in memory")
    rate_limit_prefix: str = Field(
        "mercato-ratelimit", min_length=1, description="prefix of the rate-limit keys in Redis"
    )
    rate_limit_fail_closed: bool = Field(
        True, description="refuse (503) rather than allow when the limit storage is down"
    )
    internal_proxies: Networks = Field(
        default_factory=list,
        description="peers (the gateway) whose X-Forwarded-For a backend service believes,"
        " besides TRUSTED_PROXIES; default none (`mercato up` adds its own gateway)",
    )


class ObservabilitySettings(BaseSettings):
    """Tracing (OpenTelemetry; the SDK reads the other OTEL_* variables itself) and error
    reporting (Sentry); see README, "Tracing and error reporting"."""

    otel_exporter_otlp_endpoint: Annotated[
        BlankIsUnset, server_url("http", "https", example="http://collector:4318")
    ] = Field(None, description="OTLP/HTTP collector (/v1/traces is added); set: tracing on")
    otel_exporter_otlp_traces_endpoint: Annotated[
        BlankIsUnset, server_url("http", "https", example="http://collector:4318/v1/traces")
    ] = Field(None, description="the whole OTLP/HTTP URL for spans, instead of the above")
    otel_exporter_otlp_protocol: Literal["http/protobuf"] = Field(
        "http/protobuf", description="only http/protobuf is installed"
    )
    otel_traces_exporter: Literal["otlp", "console", "none"] | None = Field(
        None, description="otlp (the default with an endpoint), console (stdout) or none"
    )
    otel_sdk_disabled: bool = Field(False, description="true: tracing off whatever is set")
    sentry_dsn: Annotated[
        BlankIsUnset, server_url("http", "https", example="https://key@sentry.example.com/1")
    ] = Field(None, description="report unhandled errors and failed events to Sentry")
    sentry_environment: str | None = Field(None, description="Sentry's environment (ENVIRONMENT)")
    sentry_traces_sample_rate: float = Field(
        0.0, ge=0, le=1, description="share of requests Sentry also traces (0: errors only)"
    )

    @property
    def traces_exporter(self) -> Literal["otlp", "console"] | None:
        """The exporter tracing uses; None when tracing is off."""
        chosen = self.otel_traces_exporter
        if self.otel_sdk_disabled or chosen == "none":
            return None
        if chosen is None:
            named = self.otel_exporter_otlp_endpoint or self.otel_exporter_otlp_traces_endpoint
            return "otlp" if named else None
        return chosen


# --- what every service shares ------------------------------------------------------------


class SharedSettings(
    ObservabilitySettings,
    SecuritySettings,
    MailSettings,
    MessagingSettings,
    BrokerSettings,
    CacheSettings,
    DatabaseSettings,
    LoggingSettings,
    ServerSettings,
    RuntimeSettings,
):
    """The kernel's settings, validated once at start-up; a process loads them combined
    with every context's (``mercato.settings.Settings``)."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    #: This class's defaults per environment; a context's settings class may add its own
    #: (:func:`profiles` merges them). Production keeps no insecure default.
    PROFILE: ClassVar[Profile] = {
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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        from mercato.platform.settings_sources import chosen_config_file_source

        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        if (config_file := chosen_config_file_source(settings_cls)) is not None:
            sources.append(config_file)
        sources.append(file_secret_settings)
        return tuple(sources)

    @model_validator(mode="after")
    def _apply_profile(self) -> SharedSettings:
        """Fill what no source set with the active environment's defaults."""
        for name, value in profiles(type(self))[self.environment].items():
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

    def database_url_for(self, service: str) -> str:
        """The service's own database: its ``<SERVICE>_DATABASE_URL`` (when its context
        declares one), the shared ``DATABASE_URL``, or an embedded SQLite."""
        override: str | None = getattr(self, f"{service}_database_url", None)
        if override:
            return override
        if self.database_url:
            return self.database_url
        if self.environment == "testing":
            return "sqlite+aiosqlite:///:memory:"
        return f"sqlite+aiosqlite:///{self.data_dir / f'{service}.db'}"

    def token_keys_url(self) -> str:
        """Where verifiers fetch the token issuer's public keys (a JWKS). Only the combined
        settings know which service issues tokens and where it listens (``JWKS_URL``)."""
        raise ConfigError(["no JWKS URL: these settings know no service that issues tokens"])

    def shared_problems(self, *, signs_tokens: bool) -> list[str]:
        """What makes these settings unfit to run a service (``signs_tokens``: one that
        issues tokens); empty when they are fine."""
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
        return found + self._key_problems(signs_tokens=signs_tokens)

    def _key_problems(self, *, signs_tokens: bool) -> list[str]:
        """The JWT keys start-up would refuse: unreadable ones anywhere, missing signing keys
        in production (only the service that issues tokens signs)."""
        from mercato.platform.security.keys import KeyConfigError, KeySet, parse_public_keys

        found: list[str] = []
        try:
            if self.jwt_private_keys is not None:
                KeySet.from_pem(self.jwt_private_keys.get_secret_value())
        except KeyConfigError as exc:
            found.append(f"JWT_PRIVATE_KEYS: {exc}")
        try:
            if self.jwt_public_keys:
                parse_public_keys(self.jwt_public_keys)
        except KeyConfigError as exc:
            found.append(f"JWT_PUBLIC_KEYS: {exc}")
        key_file = self.jwt_private_keys_file
        if not signs_tokens or self.jwt_private_keys is not None:
            return found
        if key_file is not None and key_file.is_file():
            try:
                KeySet.from_pem(key_file.read_text(encoding="ascii"))
            except (KeyConfigError, OSError, UnicodeDecodeError) as exc:
                found.append(f"JWT_PRIVATE_KEYS_FILE {key_file}: {exc}")
        elif self.is_production and key_file is not None:
            found.append(f"JWT_PRIVATE_KEYS_FILE {key_file} does not exist")
        elif self.is_production:
            found.append(
                "JWT_PRIVATE_KEYS (or JWT_PRIVATE_KEYS_FILE) is not set;"
                " production never generates signing keys"
            )
        return found


def profiles(settings_cls: type[BaseSettings]) -> dict[Environment, dict[str, Any]]:
    """Every ``PROFILE`` of ``settings_cls`` and its bases, merged: what the active
    environment sets when no source does."""
    merged: dict[Environment, dict[str, Any]] = {env: {} for env in get_args(Environment)}
    for base in reversed(settings_cls.__mro__):
        profile: Profile = vars(base).get("PROFILE", {})
        for environment, values in profile.items():
            merged[environment].update(values)
    return merged
