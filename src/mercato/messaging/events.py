"""The base of every event payload. Each bounded context declares its events in its own
``contracts.py`` as subclasses, naming the routing key in ``event_type``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class EventData(BaseModel):
    """The ``data`` of an event envelope. Unknown fields are ignored, so producers can add
    fields without breaking older consumers; missing or mistyped ones are rejected."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_type: ClassVar[str]
