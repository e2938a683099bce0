"""Spans of events, after OpenTelemetry's messaging conventions, when tracing is on (a
``tracer``; ``None`` makes none):

- ``create <type>`` (producer) while a use case publishes: its context is the envelope's
  ``traceparent``, so everything the event causes joins the trace of the request;
- ``send <type>`` (client) while the outbox relay hands the row to the broker, a child of
  the create span (the wait in the outbox shows as the gap between the two);
- ``process <type>`` (consumer) while a consumer group handles a delivery, a child of the
  create span, around the handlers and their transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, StatusCode, Tracer

from mercato.messaging.brokers import OutgoingMessage
from mercato.messaging.envelope import RawEnvelope

__all__ = ["MESSAGE_ID", "creating", "failed", "processing", "sending"]

_SYSTEM = "messaging.system"
_DESTINATION = "messaging.destination.name"
MESSAGE_ID = "messaging.message.id"


def _parent(traceparent: str | None) -> Context | None:
    """The context an event's ``traceparent`` names (None: a new trace)."""
    return propagate.extract({"traceparent": traceparent}) if traceparent else None


def creating(tracer: Tracer | None, event_type: str, system: str) -> Any:
    """The producer span a published event is created in (a no-op without ``tracer``)."""
    if tracer is None:
        return nullcontext()
    return tracer.start_as_current_span(
        f"create {event_type}",
        kind=SpanKind.PRODUCER,
        attributes={
            _SYSTEM: system,
            _DESTINATION: event_type,
            "messaging.operation.type": "create",
        },
    )


@contextmanager
def sending(
    tracer: Tracer | None, messages: Sequence[OutgoingMessage], system: str
) -> Iterator[None]:
    """A send span per message, each the child of its event's create span, for the time
    the broker takes to confirm the batch (failed if it does not)."""
    if tracer is None:
        yield
        return
    spans = [
        tracer.start_span(
            f"send {message.event_type}",
            context=_parent(message.headers.get("traceparent")),
            kind=SpanKind.CLIENT,
            attributes={
                _SYSTEM: system,
                _DESTINATION: message.event_type,
                MESSAGE_ID: message.event_id,
                "messaging.operation.type": "send",
            },
        )
        for message in messages
    ]
    try:
        yield
    except Exception as exc:
        for span in spans:
            span.record_exception(exc)
            span.set_status(StatusCode.ERROR, type(exc).__name__)
        raise
    finally:
        for span in spans:
            span.end()


def processing(
    tracer: Tracer | None, raw: RawEnvelope, group: str, system: str, attempt: int
) -> Any:
    """The consumer span of one delivery of ``raw`` to ``group``."""
    if tracer is None:
        return nullcontext()
    return tracer.start_as_current_span(
        f"process {raw.type}",
        context=_parent(raw.traceparent),
        kind=SpanKind.CONSUMER,
        # A failed handler is marked by failed(); what leaves the span is only a stop.
        record_exception=False,
        set_status_on_exception=False,
        attributes={
            _SYSTEM: system,
            _DESTINATION: raw.type,
            MESSAGE_ID: raw.id,
            "messaging.operation.type": "process",
            "messaging.consumer.group.name": group,
            "messaging.delivery.attempt": attempt,
        },
    )


def failed(exc: BaseException) -> None:
    """Mark the current span (a handler's) failed with ``exc``; a no-op when untraced."""
    span = trace.get_current_span()
    if span.is_recording():
        span.record_exception(exc)
        span.set_status(StatusCode.ERROR, type(exc).__name__)
