"""Request and response bodies of the users API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from mercato.platform.schemas import Integral, StrictModel, Text
from mercato.users import domain


class Profile(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    username: str
    email: str
    full_name: str | None
    age: int | None
    created_at: datetime


class ProfilePatch(StrictModel):
    """Only ``full_name`` and ``age``; anything else is refused (422)."""

    full_name: Text | None = Field(None, max_length=domain.FULL_NAME_MAX)
    age: Annotated[int, Field(ge=domain.AGE_MIN, le=domain.AGE_MAX), Integral] | None = None


class ProfilePage(BaseModel):
    items: list[Profile]
    total: int
    limit: int
    offset: int
