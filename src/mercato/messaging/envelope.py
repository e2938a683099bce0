"""The event envelope of API.md, and the context (request id, trace) it carries."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, cast

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from mercato.messaging.events import EventData
from mercato.platform.tracing import traceparent_var

__all__ = ["Envelope", "MalformedMessage", "RawEnvelope", "parse_raw", "traceparent_var", "typed"]

T = TypeVar("T", bound=EventData)


class Envelope(BaseModel, Generic[T]):
    """One event on the wire: ``{"id", "type", "occurred_at", "source", "request_id",
    "traceparent", "data"}``. ``id`` is what consumers deduplicate on."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    type: str
    occurred_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    source: str
    request_id: str | None = None
    traceparent: str | None = None
    data: T


class RawEnvelope(BaseModel):
    """The envelope with its ``data`` not yet typed: what a consumer reads first."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(min_length=1, max_length=100)
    type: str = Field(min_length=1, max_length=200)
    occurred_at: AwareDatetime
    source: str
    request_id: str | None = None
    traceparent: str | None = None
    data: dict[str, Any]


class MalformedMessage(Exception):
    """A message that is not an envelope, or whose data does not fit its event type."""


def parse_raw(body: bytes) -> RawEnvelope:
    try:
        return RawEnvelope.model_validate_json(body)
    except ValidationError as exc:
        raise MalformedMessage(f"not an event envelope: {exc.error_count()} error(s)") from None


def typed(raw: RawEnvelope, data_type: type[T]) -> Envelope[T]:
    """``raw`` with its data validated as ``data_type``; :class:`MalformedMessage` if it does
    not fit."""
    try:
        data = data_type.model_validate(raw.data)
    except ValidationError as exc:
        raise MalformedMessage(
            f"{raw.type} data does not validate: {exc.error_count()} error(s)"
        ) from None
    envelope_type: type[Envelope[T]] = cast(Any, Envelope)[data_type]
    return envelope_type(**(dict(raw) | {"data": data}))
