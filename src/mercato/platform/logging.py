"""Structured logging for every Mercato process.

One pipeline serves structlog loggers, plain :mod:`logging` loggers and uvicorn's loggers:
structlog hands its event dict to the standard library, and a
:class:`structlog.stdlib.ProcessorFormatter` on each root handler renders every record the
same way. Production writes JSON lines; development gets one readable line per event.

Request-scoped fields (``request_id``, and ``service`` when several services share a
process under ``mercato up``) are bound with :func:`structlog.contextvars.bind_contextvars`
by the request middleware and appear on every line written while that request runs; with
tracing on, so do the ``trace_id`` and ``span_id`` of the current span.
"""

from __future__ import annotations

import functools
import logging
import logging.handlers
import os
import re
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final, Literal, TextIO

import structlog
from structlog.typing import EventDict, ExcInfo, Processor, WrappedLogger

from mercato.platform.tracing import add_trace_ids

__all__ = [
    "REDACTED",
    "SENSITIVE_KEY_PARTS",
    "UVICORN_LOGGERS",
    "check_rotation",
    "configure_logging",
    "get_logger",
    "is_sensitive_key",
    "redact",
    "reset_logging",
]

LogFormat = Literal["json", "console"]

SENSITIVE_KEY_PARTS: Final[frozenset[str]] = frozenset(
    {
        "password",
        "passwd",
        "token",
        "secret",
        "authorization",
        "cookie",
        "set-cookie",
        "card",
        "api_key",
        "apikey",
        "private_key",
        "credential",
    }
)
"""A key whose lower-cased name contains one of these is never logged with its value."""

REDACTED: Final = "[REDACTED]"

UVICORN_LOGGERS: Final = ("uvicorn", "uvicorn.error", "uvicorn.access")

# Our handlers carry this name prefix, so reconfiguring removes exactly them and leaves
# handlers installed by others (pytest's caplog, for one) alone.
_HANDLER_PREFIX: Final = "mercato."

# "x-api-key" and "private-key" must match "api_key" and "private_key".
_NORMALISED_PARTS: Final = tuple(sorted({p.replace("-", "_") for p in SENSITIVE_KEY_PARTS}))

# Deeper than this, containers are replaced instead of walked: a cyclic or absurdly deep
# value must not turn a log call into a RecursionError in application code.
_MAX_REDACT_DEPTH: Final = 32
_TOO_DEEP: Final = "[TOO DEEP]"

_CONTROL_CHARACTERS: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SHORT_ESCAPES: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTINUATION_INDENT: Final = "    "

_SIZE_ROTATION: Final = re.compile(r"(?P<amount>\d+)\s*(?P<unit>[kmg]i?b|b)", re.IGNORECASE)
_BYTES_PER_UNIT: Final = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}
# Minutes and seconds are left out on purpose: "10M" would read as ten megabytes.
_TIME_ROTATION: Final = re.compile(
    r"(?P<interval>\d*)\s*(?P<unit>[hd])|(?P<named>midnight|w[0-6])", re.IGNORECASE
)

_LEADING_KEYS: Final = ("timestamp", "level", "service", "logger", "request_id", "event")


def configure_logging(
    *,
    service: str,
    level: str = "INFO",
    fmt: LogFormat = "console",
    log_file: Path | None = None,
    rotate: str | None = None,
    backups: int = 7,
) -> None:
    """Route structlog, stdlib and uvicorn logging through one structured pipeline.

    Lines go to stderr (stdout stays free for CLI output) as JSON when ``fmt="json"``, as
    one readable line per event otherwise, coloured only when stderr is a terminal and
    ``NO_COLOR`` is unset. ``service`` is the default for the ``service`` field; a
    ``service`` bound in the context variables wins. With ``log_file``, JSON lines also go
    to that file: rotated by size (``rotate="10MB"``, ``"512KB"``, ``"1GB"``) or by time
    (``"midnight"``, ``"h"``, ``"6h"``, ``"d"``, ``"w0"``..``"w6"``, in UTC) keeping
    ``backups`` old files; without ``rotate`` the file is reopened when an external tool
    such as logrotate moves it. Each process needs its own file: rotation is not safe
    across processes.

    Calling it again replaces the previous configuration. Invalid arguments raise
    :class:`ValueError` and leave the current configuration in place. Run uvicorn with
    ``log_config=None`` so it does not install its own handlers over these.
    """
    numeric_level = _parse_level(level)
    if fmt not in ("json", "console"):
        raise ValueError(f"log format must be 'json' or 'console', not {fmt!r}")
    if backups < 0:
        raise ValueError(f"backups must be 0 or more, not {backups}")
    if rotate is not None and log_file is None:
        raise ValueError("rotate needs log_file: there is nothing to rotate without a file")

    handlers: list[logging.Handler] = [_stderr_handler(fmt, service)]
    if log_file is not None:
        handlers.append(_file_handler(log_file, rotate, backups, service))

    root = logging.getLogger()
    _remove_our_handlers(root)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(numeric_level)

    for name in UVICORN_LOGGERS:
        uvicorn_logger = logging.getLogger(name)
        for handler in list(uvicorn_logger.handlers):
            uvicorn_logger.removeHandler(handler)
        uvicorn_logger.propagate = True
        uvicorn_logger.setLevel(logging.NOTSET)

    alembic = logging.getLogger(_ALEMBIC_MIGRATION_LOGGER)
    if not any(isinstance(f, _AlembicChatterToDebug) for f in alembic.filters):
        alembic.addFilter(_AlembicChatterToDebug())

    structlog.configure(
        processors=[
            # First, so that nothing is computed for an event that is dropped.
            structlog.stdlib.filter_by_level,
            *_call_time_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        context_class=dict,
        cache_logger_on_first_use=True,
    )


_ALEMBIC_MIGRATION_LOGGER: Final = "alembic.runtime.migration"
_ALEMBIC_CHATTER: Final = ("Context impl ", "Will assume ")


class _AlembicChatterToDebug(logging.Filter):
    """Alembic says "Context impl SQLiteImpl." and "Will assume non-transactional DDL." at
    INFO on every run, for every history: those are DEBUG lines ("Running upgrade" stays)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and str(record.msg).startswith(_ALEMBIC_CHATTER):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def reset_logging() -> None:
    """Undo :func:`configure_logging`: remove its handlers and restore structlog's defaults."""
    root = logging.getLogger()
    _remove_our_handlers(root)
    root.setLevel(logging.WARNING)
    alembic = logging.getLogger(_ALEMBIC_MIGRATION_LOGGER)
    for chatter_filter in [f for f in alembic.filters if isinstance(f, _AlembicChatterToDebug)]:
        alembic.removeFilter(chatter_filter)
    structlog.reset_defaults()


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """Return a structlog logger writing through the stdlib logger called ``name``."""
    return structlog.stdlib.get_logger(name)


def redact(
    value: object,
    *,
    sensitive: Callable[[object], bool] | None = None,
    text: Callable[[str], str] | None = None,
    depth: int = 1,
) -> object:
    """A copy of ``value`` with the values of sensitive keys replaced by ``[REDACTED]``.

    A key is sensitive when ``sensitive(key)`` says so, by default when its lower-cased
    name (with ``-`` read as ``_``) contains one of :data:`SENSITIVE_KEY_PARTS`. Mappings
    come back as dicts, lists as lists and tuples as tuples, walked at any depth; a
    ``(name, value)`` pair such as a raw header counts as a key and its value. Strings go
    through ``text`` when given; anything else is returned unchanged; ``value`` is never
    modified.
    """
    if depth > _MAX_REDACT_DEPTH:
        return _TOO_DEEP
    hidden = sensitive or is_sensitive_key
    if isinstance(value, Mapping):
        return {
            key: REDACTED
            if hidden(key)
            else redact(item, sensitive=sensitive, text=text, depth=depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item, sensitive=sensitive, text=text, depth=depth + 1) for item in value]
    if isinstance(value, tuple):
        if len(value) == 2 and hidden(value[0]):
            return (value[0], REDACTED)
        return tuple(
            redact(item, sensitive=sensitive, text=text, depth=depth + 1) for item in value
        )
    if text is not None and isinstance(value, str):
        return text(value)
    return value


def is_sensitive_key(key: object) -> bool:
    """Whether a value under ``key`` (str, bytes) is never shown (:data:`SENSITIVE_KEY_PARTS`)."""
    if isinstance(key, bytes):
        key = key.decode("latin-1")
    return isinstance(key, str) and _is_sensitive_name(key)


@functools.lru_cache(maxsize=4096)
def _is_sensitive_name(name: str) -> bool:
    normalised = name.lower().replace("-", "_")
    return any(part in normalised for part in _NORMALISED_PARTS)


#: Values with nothing inside to redact: :func:`redact` would hand them back unchanged.
_SCALARS: Final = frozenset({str, int, float, bool, type(None)})


def _redact_event(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # Every line passes here (the access log on every request): a str key and a scalar
    # value take the direct way, the same answer as is_sensitive_key() and redact().
    redacted: EventDict = {}
    for key, value in event_dict.items():
        if _is_sensitive_name(key) if key.__class__ is str else is_sensitive_key(key):
            redacted[key] = REDACTED
        elif value.__class__ in _SCALARS:
            redacted[key] = value
        else:
            redacted[key] = redact(value)
    return redacted


def _parse_level(level: str) -> int:
    levels = logging.getLevelNamesMapping()
    numeric = levels.get(level.strip().upper())
    if numeric is None:
        raise ValueError(
            f"unknown log level {level!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    return numeric


def _call_time_processors() -> list[Processor]:
    """Processors that must see the moment of the log call: context, trace, level, time."""
    return [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]


class _ServiceDefault:
    """Add the process's service name unless the event or its context names one."""

    def __init__(self, service: str) -> None:
        self._service = service

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", self._service)
        return event_dict


def _drop_uvicorn_color_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """uvicorn adds a copy of its message with terminal colour codes; the message is enough."""
    event_dict.pop("color_message", None)
    return event_dict


def _formatter(service: str, renderer: list[Processor]) -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            *_call_time_processors(),
            structlog.stdlib.ExtraAdder(),
            _drop_uvicorn_color_message,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _ServiceDefault(service),
            _redact_event,
            *renderer,
        ],
    )


def _json_renderer() -> list[Processor]:
    return [
        structlog.processors.format_exc_info,
        _lead_with_core_fields,
        structlog.processors.JSONRenderer(),
    ]


def _console_renderer(colors: bool) -> list[Processor]:
    return [
        _escape_for_console,
        structlog.dev.ConsoleRenderer(colors=colors, exception_formatter=_indented_traceback),
    ]


def _lead_with_core_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    ordered = {key: event_dict[key] for key in _LEADING_KEYS if key in event_dict}
    ordered.update(event_dict)
    return ordered


def _escape(text: str) -> str:
    return _CONTROL_CHARACTERS.sub(_escape_character, text)


def _escape_character(match: re.Match[str]) -> str:
    character = match.group()
    short = _SHORT_ESCAPES.get(character)
    if short is not None:
        return short
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _indented_block(text: str) -> str:
    # Every continuation line is indented, so none can pass for a new entry, which always
    # starts with its timestamp in the first column.
    return "\n".join(_CONTINUATION_INDENT + _escape(line) for line in text.splitlines())


def _indented_traceback(sio: TextIO, exc_info: ExcInfo) -> None:
    sio.write("\n" + _indented_block("".join(traceback.format_exception(*exc_info))))


def _escape_for_console(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Keep each console entry on one line whatever its values contain.

    JSON output needs none of this: the encoder escapes control characters itself.
    """
    escaped: EventDict = {}
    for key, value in event_dict.items():
        if key == "exc_info":
            escaped[key] = value
            continue
        if key in ("exception", "stack") and isinstance(value, str):
            escaped[key] = _indented_block(value)
            continue
        if isinstance(value, str):
            value = _escape(value)
        elif not isinstance(value, int | float | None):
            # The renderer shows other values by repr; builtin reprs escape, others may not.
            shown = repr(value)
            if _CONTROL_CHARACTERS.search(shown):
                value = _escape(shown)
        escaped[_escape(key) if isinstance(key, str) else key] = value
    return escaped


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Write to whatever ``sys.stderr`` is when a record is emitted.

    Holding the stream found at configuration time would keep writing to a replaced or
    closed stream (pytest's capture swaps it per test).
    """

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass  # the stream is always the current sys.stderr


def _stderr_handler(fmt: LogFormat, service: str) -> logging.Handler:
    handler = _StderrHandler()
    renderer = _json_renderer() if fmt == "json" else _console_renderer(_wants_colors())
    handler.setFormatter(_formatter(service, renderer))
    handler.set_name(f"{_HANDLER_PREFIX}stderr")
    return handler


def _wants_colors() -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def check_rotation(rotate: str) -> str:
    """``rotate`` if it is a size or a time :func:`configure_logging` accepts, else
    :class:`ValueError` saying what is."""
    if _parse_size(rotate) is None and _parse_interval(rotate) is None:
        raise ValueError(
            f"rotate must be a size such as '10MB', '512KB' or '1GB', or a time such as "
            f"'midnight', 'h', '6h', 'd' or 'w0'..'w6'; got {rotate!r}"
        )
    return rotate


def _file_handler(
    log_file: Path, rotate: str | None, backups: int, service: str
) -> logging.Handler:
    if rotate is not None:
        check_rotation(rotate)
    size = _parse_size(rotate) if rotate is not None else None
    timing = _parse_interval(rotate) if rotate is not None and size is None else None
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler: logging.Handler
    if size is not None:
        handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=size, backupCount=backups, encoding="utf-8"
        )
    elif timing is not None:
        when, interval = timing
        handler = logging.handlers.TimedRotatingFileHandler(
            log_file, when=when, interval=interval, backupCount=backups, encoding="utf-8", utc=True
        )
    else:
        handler = logging.handlers.WatchedFileHandler(log_file, encoding="utf-8")
    handler.setFormatter(_formatter(service, _json_renderer()))
    handler.set_name(f"{_HANDLER_PREFIX}file")
    return handler


def _parse_size(rotate: str) -> int | None:
    """Bytes for a size such as "10MB" (KB, MB and GB count in 1024s); None if not a size."""
    match = _SIZE_ROTATION.fullmatch(rotate.strip())
    if match is None:
        return None
    unit = match["unit"].lower().replace("i", "")
    return int(match["amount"]) * _BYTES_PER_UNIT[unit] or None


def _parse_interval(rotate: str) -> tuple[str, int] | None:
    """``(when, interval)`` for TimedRotatingFileHandler; None if not a time."""
    match = _TIME_ROTATION.fullmatch(rotate.strip())
    if match is None:
        return None
    if match["named"]:
        return match["named"].upper(), 1
    interval = int(match["interval"] or 1)
    return (match["unit"].upper(), interval) if interval > 0 else None


def _remove_our_handlers(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        if (handler.get_name() or "").startswith(_HANDLER_PREFIX):
            logger.removeHandler(handler)
            handler.close()
