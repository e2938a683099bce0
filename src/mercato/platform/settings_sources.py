"""Where settings come from, and how they are shown: loading any settings class from every
source (one line per problem), the config file, the source of each value (``config
show``), names in ``.env`` that set nothing, and values with their secrets masked.

Every function takes the settings class to load, so the kernel stays ignorant of which
contexts a process combines (``mercato.settings`` binds them to the whole ``Settings``).
"""

from __future__ import annotations

import configparser
import json
import os
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import AliasChoices, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    JsonConfigSettingsSource,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from mercato.platform.settings import ConfigError, SharedSettings, profiles

SettingsT = TypeVar("SettingsT", bound=SharedSettings)

CONFIG_SECTION: Final = "mercato"
MASK: Final = "********"
#: ``dsn``: a Sentry DSN's key lets whoever holds it file reports into the project.
_SECRET_NAME_PARTS: Final = ("secret", "password", "token", "private_key", "dsn")

# --- the config file source -------------------------------------------------------------

_config_file: ContextVar[Path | None] = ContextVar("mercato_config_file", default=None)


class IniConfigSettingsSource(InitSettingsSource):
    """The ``[mercato]`` section of an INI file (pydantic-settings has no INI source)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        parser = configparser.ConfigParser(interpolation=None)
        parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
        if not parser.has_section(CONFIG_SECTION):
            raise ConfigError([f"config file {path} has no [{CONFIG_SECTION}] section"])
        super().__init__(settings_cls, dict(parser.items(CONFIG_SECTION)))


#: What the parsers raise for a file that is not YAML, JSON, TOML or INI (or not UTF-8).
_UNPARSABLE: Final = (
    yaml.YAMLError,
    json.JSONDecodeError,
    tomllib.TOMLDecodeError,
    configparser.Error,
    UnicodeDecodeError,
)


def _format_source(settings_cls: type[BaseSettings], path: Path) -> InitSettingsSource:
    suffix = path.suffix.lower()
    if suffix in {".yaml", ".yml"}:
        return YamlConfigSettingsSource(settings_cls, yaml_file=path)
    if suffix == ".json":
        return JsonConfigSettingsSource(settings_cls, json_file=path)
    if suffix == ".toml":
        return TomlConfigSettingsSource(settings_cls, toml_file=path)
    if suffix in {".ini", ".cfg", ".conf"}:
        return IniConfigSettingsSource(settings_cls, path)
    raise ConfigError(
        [f"config file {path}: unknown format {suffix!r} (use .yaml, .json, .toml, .ini)"]
    )


def config_file_source(settings_cls: type[BaseSettings], path: Path) -> InitSettingsSource:
    """The settings in one YAML, JSON, TOML or INI file, at its top level or under a
    ``mercato`` section (the only choice for INI). Raises :class:`ConfigError` naming the
    file when it is missing, unreadable or sets a name that is no setting."""
    # pydantic-settings' sources skip a missing file silently and let parse errors out
    # raw, and their section options require the section: those three are checked here.
    if not path.is_file():
        raise ConfigError([f"config file {path} does not exist"])
    try:
        source = _format_source(settings_cls, path)
    except _UNPARSABLE as exc:
        raise ConfigError([f"config file {path} cannot be parsed: {exc}"]) from None
    except (TypeError, ValueError):  # the sources' dict.update() of a list or a scalar
        raise ConfigError([f"config file {path} must hold a mapping of settings"]) from None
    section = source.init_kwargs.get(CONFIG_SECTION)
    if isinstance(section, Mapping):
        source = InitSettingsSource(settings_cls, dict(section))
    known = field_names(settings_cls)
    if unknown := sorted({str(name).lower() for name in source.init_kwargs} - known):
        raise ConfigError([f"config file {path}: unknown setting {name!r}" for name in unknown])
    return source


def chosen_config_file_source(settings_cls: type[BaseSettings]) -> InitSettingsSource | None:
    """The source of the config file the running :func:`load` was given, if any."""
    path = _config_file.get()
    return None if path is None else config_file_source(settings_cls, path)


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


# --- loading ----------------------------------------------------------------------------


def load(
    settings_cls: type[SettingsT],
    config_file: Path | str | None = None,
    *,
    env_file: Path | str | None = ".env",
    **overrides: Any,
) -> SettingsT:
    """Build ``settings_cls`` from every source; ``overrides`` are the explicit arguments.

    Raises :class:`ConfigError` for an unreadable config file or invalid values (one line
    per problem, never echoing a secret's value).
    """
    path = _resolve_config_file(config_file)
    try:
        with _using_config_file(path):
            return settings_cls(_env_file=env_file, _secrets_dir=_secrets_dir(), **overrides)
    except ValidationError as exc:
        raise ConfigError(
            [
                f"{_loc_name(settings_cls, err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
                for err in exc.errors(include_input=False)
            ]
        ) from None


def _loc_name(settings_cls: type[BaseSettings], loc: tuple[int | str, ...]) -> str:
    """The name a user sets for the field at ``loc`` (``MERCATO_ADMIN_USERNAME``...)."""
    if not loc:
        return "settings"
    name = str(loc[0])
    field = settings_cls.model_fields.get(name)
    lead = env_name(name, field) if field is not None else name.upper()
    return ".".join([lead, *(str(part) for part in loc[1:])])


def env_name(name: str, field: FieldInfo) -> str:
    """The environment variable that sets field ``name`` (its first alias, if it has one)."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        alias = next((str(choice) for choice in alias.choices if isinstance(choice, str)), None)
    return str(alias).upper() if isinstance(alias, str) else name.upper()


def _names_of(name: str, field: FieldInfo) -> set[str]:
    """Every lower-cased name that sets field ``name``: itself and its aliases."""
    names = {name}
    if isinstance(field.validation_alias, str):
        names.add(field.validation_alias.lower())
    elif isinstance(field.validation_alias, AliasChoices):
        names.update(str(choice).lower() for choice in field.validation_alias.choices)
    return names


def field_names(settings_cls: type[BaseSettings]) -> set[str]:
    """Every lower-cased name that sets some field of ``settings_cls``."""
    names: set[str] = set()
    for name, field in settings_cls.model_fields.items():
        names |= _names_of(name, field)
    return names


#: Read from the process environment only; in .env they have no effect.
_ENVIRONMENT_ONLY: Final = ("mercato_config", "secrets_dir")


def env_file_warnings(
    settings_cls: type[BaseSettings], env_file: Path | str | None = ".env"
) -> list[str]:
    """One line per name in ``env_file`` that sets nothing, with the closest setting."""
    if not env_file or not Path(env_file).is_file():
        return []
    import difflib

    from dotenv import dotenv_values

    known = field_names(settings_cls)
    spelled = {name: env_name(name, field) for name, field in settings_cls.model_fields.items()}
    spelled |= {alias: alias.upper() for alias in known - set(spelled)}
    found: list[str] = []
    for raw in dotenv_values(env_file):
        name = raw.lower()
        if name in known:
            continue
        if name in _ENVIRONMENT_ONLY:
            found.append(f"{raw} ({env_file}): read from the environment only, not from {env_file}")
            continue
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {spelled[close[0]]}?" if close else ""
        found.append(f"{raw} ({env_file}): not a setting{hint}")
    return found


def setting_sources(
    settings_cls: type[SharedSettings],
    config_file: Path | str | None = None,
    *,
    env_file: Path | str | None = ".env",
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
        in_file = config_file_source(settings_cls, path).init_kwargs
        labelled.append((f"config file {path}", {str(k).lower(): v for k, v in in_file.items()}))
    secrets = _secrets_dir()
    if secrets is not None:
        labelled.append(
            (f"secrets dir {secrets}", {p.name.lower(): True for p in secrets.iterdir()})
        )
    environment = load(settings_cls, path, env_file=env_file).environment
    by_profile = profiles(settings_cls)[environment]
    found: dict[str, str] = {}
    for name, field in settings_cls.model_fields.items():
        names = _names_of(name, field)
        found[name] = next(
            (label for label, values in labelled if names & set(values)),
            f"{environment} profile" if name in by_profile else "default",
        )
    return found


# --- showing values ---------------------------------------------------------------------


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
