"""Structured logging: fields, context, stdlib bridging, redaction, injection, rotation."""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
import structlog

from mercato.platform.logging import (
    REDACTED,
    UVICORN_LOGGERS,
    configure_logging,
    get_logger,
    reset_logging,
)

TIMESTAMP_AT_START = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Leave the process's logging as this test found it, for the tests that follow."""
    uvicorn_loggers = [logging.getLogger(name) for name in UVICORN_LOGGERS]
    uvicorn_state = [
        (logger, logger.level, logger.propagate, list(logger.handlers))
        for logger in uvicorn_loggers
    ]
    root_level = logging.getLogger().level
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()
    reset_logging()
    logging.getLogger().setLevel(root_level)
    for logger, level, propagate, handlers in uvicorn_state:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        for handler in handlers:
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_json_line_carries_the_required_fields_with_a_utc_timestamp(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(service="orders", fmt="json")

    get_logger("mercato.orders.service").info("order placed", order_id=7)

    [line] = json_lines(capsys.readouterr().err)
    assert line["event"] == "order placed"
    assert line["order_id"] == 7
    assert line["level"] == "info"
    assert line["logger"] == "mercato.orders.service"
    assert line["service"] == "orders"
    assert "request_id" not in line
    assert line["timestamp"].endswith(("Z", "+00:00"))
    stamped = datetime.fromisoformat(line["timestamp"])
    assert stamped.utcoffset() == timedelta(0)
    assert abs(datetime.now(stamped.tzinfo) - stamped) < timedelta(minutes=1)


def test_bound_request_id_appears_on_structlog_and_stdlib_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(service="users", fmt="json")
    structlog.contextvars.bind_contextvars(request_id="req-42")

    get_logger("mercato.users").info("user read")
    logging.getLogger("mercato.legacy").warning("legacy path")

    lines = json_lines(capsys.readouterr().err)
    assert [line["request_id"] for line in lines] == ["req-42", "req-42"]


def test_service_bound_per_request_wins_over_the_process_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(service="mercato", fmt="json")
    log = get_logger("mercato.platform.middleware")

    tokens = structlog.contextvars.bind_contextvars(service="products")
    log.info("inside a products request")
    logging.getLogger("uvicorn.error").info("stdlib inside a products request")
    structlog.contextvars.reset_contextvars(**tokens)
    log.info("outside any request")

    lines = json_lines(capsys.readouterr().err)
    assert [line["service"] for line in lines] == ["products", "products", "mercato"]


def test_stdlib_and_uvicorn_loggers_write_the_same_json_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # What uvicorn's own logging config leaves behind: a private handler, no propagation.
    uvicorn_access = logging.getLogger("uvicorn.access")
    private = logging.StreamHandler(io.StringIO())
    uvicorn_access.addHandler(private)
    uvicorn_access.propagate = False
    configure_logging(service="gateway", fmt="json")

    logging.getLogger("x").warning("disk %s", "full", extra={"free_bytes": 12})
    logging.getLogger("uvicorn.error").info("Started server process")
    uvicorn_access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/health", "1.1", 200)

    lines = json_lines(capsys.readouterr().err)
    assert [(line["logger"], line["level"], line["event"]) for line in lines] == [
        ("x", "warning", "disk full"),
        ("uvicorn.error", "info", "Started server process"),
        ("uvicorn.access", "info", '127.0.0.1:5000 - "GET /health HTTP/1.1" 200'),
    ]
    assert lines[0]["free_bytes"] == 12
    for line in lines:
        assert line["service"] == "gateway"
        assert datetime.fromisoformat(line["timestamp"]).utcoffset() == timedelta(0)
    assert private.stream.getvalue() == ""


def test_level_filters_structlog_and_stdlib_loggers(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(service="auth", level="warning", fmt="json")

    get_logger("mercato.auth").info("dropped")
    logging.getLogger("uvicorn.access").info("dropped too")
    get_logger("mercato.auth").warning("kept")
    logging.getLogger("uvicorn.error").error("kept too")

    assert [line["event"] for line in json_lines(capsys.readouterr().err)] == ["kept", "kept too"]


def test_configuring_again_replaces_the_previous_configuration(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(service="first", fmt="console")
    configure_logging(service="second", fmt="json")

    get_logger("mercato.x").info("once")
    logging.getLogger("x").warning("once too")

    lines = json_lines(capsys.readouterr().err)
    assert [(line["event"], line["service"]) for line in lines] == [
        ("once", "second"),
        ("once too", "second"),
    ]


def test_invalid_arguments_leave_the_running_configuration_in_place(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    configure_logging(service="orders", fmt="json")

    with pytest.raises(ValueError, match="log level"):
        configure_logging(service="other", level="LOUD", fmt="json")
    with pytest.raises(ValueError, match="rotate"):
        configure_logging(service="other", fmt="json", log_file=tmp_path / "x.log", rotate="often")
    get_logger("mercato.orders").info("still here")

    [line] = json_lines(capsys.readouterr().err)
    assert line["service"] == "orders"


def test_console_lines_are_readable_and_plain_when_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(service="products", fmt="console")
    structlog.contextvars.bind_contextvars(request_id="req-7")

    get_logger("mercato.products").info("product created", sku="ABC-1")

    [line] = capsys.readouterr().err.splitlines()
    assert TIMESTAMP_AT_START.match(line)
    for part in ("info", "product created", "mercato.products", "sku=ABC-1"):
        assert part in line
    assert "service=products" in line
    assert "request_id=req-7" in line
    assert "\x1b[" not in line


def test_sensitive_values_are_redacted_at_any_depth(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(service="gateway", fmt="json")
    request = {
        "path": "/api/v1/auth/login",
        "headers": [{"Authorization": "Bearer abc.def"}, {"Accept": "application/json"}],
        "body": {"username": "ann", "Password": "Hunter22", "card": ("4111", "1111")},
    }

    get_logger("mercato.gateway").info("proxying", request=request, api_key="k-123")
    logging.getLogger("x").warning("login", extra={"refresh_token": "r-456"})

    output = capsys.readouterr().err
    for secret in ("abc.def", "Hunter22", "4111", "k-123", "r-456"):
        assert secret not in output
    structlog_line, stdlib_line = json_lines(output)
    assert structlog_line["request"] == {
        "path": "/api/v1/auth/login",
        "headers": [{"Authorization": REDACTED}, {"Accept": "application/json"}],
        "body": {"username": "ann", "Password": REDACTED, "card": REDACTED},
    }
    assert structlog_line["api_key"] == REDACTED
    assert stdlib_line["refresh_token"] == REDACTED
    # The caller's data is not modified.
    assert request["headers"] == [
        {"Authorization": "Bearer abc.def"},
        {"Accept": "application/json"},
    ]


def test_redaction_matches_key_parts_case_insensitively_and_never_takes_a_value_for_a_key(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(service="gateway", fmt="json")
    value = {
        "X-API-Key": "k",
        "Set-Cookie": "session=s",
        "db_credentials": {"user": "u"},
        "items": [("authorization", b"Bearer t"), ("accept", "json"), 3],
        "nested": ({"clientSecret": "c"},),
        "username": "ann",
    }

    get_logger("mercato.gateway").info("checked", value=value, note="password")

    [line] = json_lines(capsys.readouterr().err)
    assert line["value"] == {
        "X-API-Key": REDACTED,
        "Set-Cookie": REDACTED,
        "db_credentials": REDACTED,
        "items": [["authorization", REDACTED], ["accept", "json"], 3],
        "nested": [{"clientSecret": REDACTED}],
        "username": "ann",
    }
    assert line["note"] == "password"


@pytest.mark.parametrize("fmt", ["json", "console"])
@pytest.mark.parametrize("breaker", ["\n", "\r\n", "\r", "\u2028", "\x85"])
def test_user_input_cannot_start_a_new_log_line(
    capsys: pytest.CaptureFixture[str], fmt: Literal["json", "console"], breaker: str
) -> None:
    configure_logging(service="users", fmt=fmt)
    forged = f"ann{breaker}2030-01-01T00:00:00Z [info     ] admin granted"

    get_logger("mercato.users").info(forged, username=forged)
    logging.getLogger("uvicorn.error").warning("bad name %s", forged)

    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    if fmt == "json":
        assert [line["event"] for line in json_lines("\n".join(lines))] == [
            forged,
            f"bad name {forged}",
        ]
    else:
        assert all("admin granted" in line for line in lines)


def test_exception_traceback_is_logged_as_a_field(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(service="orders", fmt="json")
    log = get_logger("mercato.orders")

    try:
        raise ValueError("stock went negative")
    except ValueError:
        log.exception("reservation failed", order_id=3)
        logging.getLogger("x").exception("stdlib saw it too")

    lines = json_lines(capsys.readouterr().err)
    assert [line["level"] for line in lines] == ["error", "error"]
    for line in lines:
        assert line["exception"].startswith("Traceback (most recent call last):")
        assert "ValueError: stock went negative" in line["exception"]
        assert "test_logging.py" in line["exception"]
    assert lines[0]["order_id"] == 3


def test_console_traceback_follows_the_line_indented(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(service="orders", fmt="console")

    try:
        raise RuntimeError("bad\n2030-01-01T00:00:00Z [info     ] forged")
    except RuntimeError:
        get_logger("mercato.orders").exception("failed")

    first, *rest = capsys.readouterr().err.splitlines()
    assert "failed" in first
    assert any("RuntimeError: bad" in line for line in rest)
    assert all(line.startswith(" ") for line in rest)


def test_size_rotation_keeps_at_most_the_given_backups(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    log_file = tmp_path / "logs" / "orders.log"
    configure_logging(service="orders", fmt="console", log_file=log_file, rotate="1KB", backups=2)
    log = get_logger("mercato.orders")

    for number in range(60):
        log.info("order placed", order_id=number, note="x" * 60)

    assert (tmp_path / "logs" / "orders.log.1").exists()
    backups = sorted(path.name for path in log_file.parent.glob("orders.log.*"))
    assert backups == ["orders.log.1", "orders.log.2"]
    for path in (log_file, *log_file.parent.glob("orders.log.*")):
        assert path.stat().st_size <= 1024
        for line in json_lines(path.read_text(encoding="utf-8")):
            assert line["service"] == "orders"
    assert json_lines(log_file.read_text(encoding="utf-8"))[-1]["order_id"] == 59
    # The console keeps its own, readable output alongside the file.
    console = capsys.readouterr().err.splitlines()
    assert len(console) == 60
    assert TIMESTAMP_AT_START.match(console[0])


def test_file_without_rotate_gets_json_lines(tmp_path: Path) -> None:
    log_file = tmp_path / "users.log"
    configure_logging(service="users", fmt="console", log_file=log_file)

    logging.getLogger("uvicorn.error").info("Application startup complete.")

    [line] = json_lines(log_file.read_text(encoding="utf-8"))
    assert line["event"] == "Application startup complete."
    assert line["logger"] == "uvicorn.error"


@pytest.mark.parametrize(
    ("rotate", "when", "seconds"),
    [
        ("midnight", "MIDNIGHT", 86400),
        ("h", "H", 3600),
        ("6H", "H", 6 * 3600),
        ("w0", "W0", 7 * 86400),
    ],
)
def test_time_rotation_uses_a_timed_handler_in_utc(
    tmp_path: Path, rotate: str, when: str, seconds: int
) -> None:
    configure_logging(service="auth", log_file=tmp_path / "auth.log", rotate=rotate, backups=3)

    [handler] = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.handlers.TimedRotatingFileHandler)
    ]
    assert handler.when == when
    assert handler.interval == seconds
    assert handler.utc is True
    assert handler.backupCount == 3
    assert Path(handler.baseFilename) == tmp_path / "auth.log"


@pytest.mark.parametrize("rotate", ["", "10XB", "fast", "0MB", "-1MB", "1.5MB", "10M", "5m", "0h"])
def test_invalid_rotate_is_refused_with_a_clear_message(tmp_path: Path, rotate: str) -> None:
    with pytest.raises(ValueError, match=r"rotate must be a size such as '10MB'"):
        configure_logging(service="auth", log_file=tmp_path / "auth.log", rotate=rotate)


def test_rotate_without_a_file_is_refused() -> None:
    with pytest.raises(ValueError, match="rotate needs log_file"):
        configure_logging(service="auth", rotate="10MB")


def test_uvicorn_colour_copy_of_the_message_is_dropped(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(service="gateway", fmt="json")

    logging.getLogger("uvicorn.error").info(
        "Uvicorn running on %s", "http://x", extra={"color_message": "\x1b[1m%s\x1b[0m"}
    )

    [line] = json_lines(capsys.readouterr().err)
    assert line["event"] == "Uvicorn running on http://x"
    assert "color_message" not in line


@pytest.mark.parametrize(("level", "shown"), [("INFO", 1), ("DEBUG", 3)])
def test_alembic_context_lines_only_at_debug(
    capsys: pytest.CaptureFixture[str], level: str, shown: int
) -> None:
    configure_logging(service="auth", level=level, fmt="json")
    alembic = logging.getLogger("alembic.runtime.migration")

    alembic.info("Context impl SQLiteImpl.")
    alembic.info("Will assume non-transactional DDL.")
    alembic.info("Running upgrade  -> 0001_auth, Accounts.")

    lines = json_lines(capsys.readouterr().err)
    assert len(lines) == shown
    assert lines[-1]["event"] == "Running upgrade  -> 0001_auth, Accounts."
    assert lines[-1]["level"] == "info"
    assert {line["level"] for line in lines[:-1]} <= {"debug"}


def test_lines_written_inside_a_span_carry_its_trace_and_span_ids(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    configure_logging(service="orders", fmt="json")
    log = get_logger("mercato.orders")
    with TracerProvider().get_tracer("test").start_as_current_span("place order") as span:
        log.info("order placed")
        logging.getLogger("mercato.legacy").warning("stdlib inside the span")
    log.info("after the span")

    inside_a, inside_b, after = json_lines(capsys.readouterr().err)
    context = span.get_span_context()
    for line in (inside_a, inside_b):
        assert line["trace_id"] == f"{context.trace_id:032x}"
        assert line["span_id"] == f"{context.span_id:016x}"
    assert "trace_id" not in after
    assert "span_id" not in after
