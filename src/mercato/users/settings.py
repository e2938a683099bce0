"""The users service's settings: its database."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from mercato.platform.settings import DatabaseUrl


class UsersSettings(BaseSettings):
    users_database_url: DatabaseUrl = Field(
        None, description="the users service's own database, over DATABASE_URL"
    )
