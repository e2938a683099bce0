"""Error reporting to Sentry, when ``SENTRY_DSN`` is set (off by default: nothing is imported
or installed otherwise).

What is reported: an unhandled exception while serving a request (the 500 the request
middleware answers) and a failed event handler (retried or dead-lettered), each tagged with
the service, the request id and the trace id (and, for an event, its type, id and consumer
group). Outages of a dependency are not reported: they are 503s, a metric and an alert.

What is not: personal data and secrets. Sentry's ``data_collection`` (the successor of
``send_default_pii=False``) keeps it from adding the user's identity, address, cookies and
local variables; :func:`scrub` then removes, anywhere in the event (request headers and
body, tags), the values under sensitive keys (the log redaction's list: passwords, tokens,
``Authorization``, cookies...) and under personal ones (email, username...), sensitive
query parameters, and any email address left in a string.
Sentry's log integration is left out: log lines are structlog's, redacted by its pipeline.
"""

from __future__ import annotations

import asyncio
import re
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import parse_qsl, urlencode

from mercato.platform.logging import REDACTED, get_logger, is_sensitive_key, redact
from mercato.platform.middleware import request_id_var
from mercato.platform.settings import ConfigError, SharedSettings
from mercato.platform.tracing import current_trace_id

if TYPE_CHECKING:  # the `sentry` extra
    from sentry_sdk.types import Event

__all__ = ["ErrorReporter", "scrub"]

log = get_logger("mercato.errors")

#: Personal data a report never carries (keys, compared whole, ``-`` read as ``_``).
PERSONAL_KEYS: Final = frozenset(
    {"email", "username", "user_name", "phone", "address", "ip_address", "remote_addr"}
)
#: An address ends in a top-level domain of letters: ``mercato@0.1.0`` (a release) is not one.
_EMAIL: Final = re.compile(r"[A-Za-z0-9._%+\-]+@(?:[A-Za-z0-9\-]+\.)+[A-Za-z]{2,}")
_EMAIL_SHOWN: Final = "[email]"

Level = Literal["warning", "error"]


def _withheld(key: object) -> bool:
    if isinstance(key, bytes):
        key = key.decode("latin-1")
    if not isinstance(key, str):
        return False
    return is_sensitive_key(key) or key.lower().replace("-", "_") in PERSONAL_KEYS


def scrub(value: Any) -> Any:
    """A copy of ``value`` (a Sentry event or any part of it) without secrets or personal
    data: values under sensitive or personal keys are ``[REDACTED]``, email addresses in
    strings ``[email]``."""
    return redact(value, sensitive=_withheld, text=_without_emails)


def _without_emails(text: str) -> str:
    return _EMAIL.sub(_EMAIL_SHOWN, text)


def _scrub_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    return urlencode([(k, REDACTED if _withheld(k) else v) for k, v in pairs])


def before_send(event: Event, hint: dict[str, Any]) -> Event:
    """Sentry's last look at an event: :func:`scrub` it (and the request's query string)."""
    request: Any = event.get("request")
    if isinstance(request, dict) and isinstance(request.get("query_string"), str):
        request["query_string"] = _scrub_query(request["query_string"])
    scrubbed: Event = scrub(event)
    return scrubbed


def _release() -> str:
    try:
        return f"mercato@{version('mercato')}"
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "mercato"


class ErrorReporter:
    """Reports a service's failures to Sentry: built with the app, started (``sentry_sdk``
    initialised, once per process) in its lifespan, flushed when it stops."""

    def __init__(self, settings: SharedSettings, service: str) -> None:
        if not settings.sentry_dsn:
            raise ValueError("an ErrorReporter needs SENTRY_DSN")
        self.settings, self.service = settings, service

    @classmethod
    def from_settings(cls, settings: SharedSettings, service: str) -> ErrorReporter | None:
        """A reporter when ``SENTRY_DSN`` is set, else None (error reporting is off)."""
        return cls(settings, service) if settings.sentry_dsn else None

    def start(self) -> None:
        """Initialise Sentry for this process, unless it already is for this DSN (several
        services in one process share it); :class:`ConfigError` without ``sentry-sdk``."""
        try:
            import sentry_sdk
            from sentry_sdk.integrations.fastapi import FastApiIntegration
            from sentry_sdk.integrations.logging import LoggingIntegration
            from sentry_sdk.integrations.starlette import StarletteIntegration
        except ImportError:
            raise ConfigError(
                ["SENTRY_DSN is set but sentry-sdk is not installed: install mercato[sentry]"]
            ) from None
        settings = self.settings
        client = sentry_sdk.get_client()
        if client.is_active() and client.dsn == settings.sentry_dsn:
            return
        # Reports are made by Mercato (capture), not by status code: a 503 is an outage.
        by_status: set[int] = set()
        sentry_sdk.init(
            dsn=settings.sentry_dsn,
            environment=settings.sentry_environment or settings.environment,
            release=_release(),
            # send_default_pii=False, as sentry-sdk 2.7x spells it (the flag is deprecated):
            # no user identity or address, no cookies, no SQL parameters or message bodies.
            data_collection={
                "user_info": False,
                "cookies": {"mode": "off"},
                "database_query_data": False,
                "queues": False,
                # Locals hold request bodies, tokens and user rows: the traceback's lines,
                # the request (scrubbed) and the tags say enough.
                "stack_frame_variables": False,
            },
            traces_sample_rate=settings.sentry_traces_sample_rate,
            before_send=before_send,
            before_send_transaction=before_send,
            auto_enabling_integrations=False,
            integrations=[
                StarletteIntegration(failed_request_status_codes=by_status),
                FastApiIntegration(failed_request_status_codes=by_status),
            ],
            disabled_integrations=[LoggingIntegration],
        )
        log.info("error reporting to Sentry is on", service=self.service)

    def capture(
        self, exc: BaseException, *, level: Level = "error", **tags: str | int | None
    ) -> None:
        """Report ``exc`` with the service, the request id and the trace id as tags (and
        ``tags``; unset ones are left out)."""
        import sentry_sdk

        every = {
            "service": self.service,
            "request_id": request_id_var.get(),
            "trace_id": current_trace_id(),
            **tags,
        }
        sentry_sdk.capture_exception(
            exc, level=level, tags={k: str(v) for k, v in every.items() if v is not None}
        )

    async def flush(self, within: float) -> None:
        """Send what is queued, waiting at most ``within`` seconds (off the event loop)."""
        import sentry_sdk

        await asyncio.to_thread(sentry_sdk.flush, within)
