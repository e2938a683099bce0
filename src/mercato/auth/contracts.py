"""What other contexts may import from auth: its events."""

from __future__ import annotations

from datetime import datetime

from mercato.messaging.events import EventData


class UserRegistered(EventData):
    event_type = "user.registered"

    user_id: str
    username: str
    email: str
    full_name: str | None = None
    age: int | None = None
    roles: list[str] = []
    created_at: datetime
