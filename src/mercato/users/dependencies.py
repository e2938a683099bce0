"""Annotated dependencies of the users API."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from mercato.platform.schemas import MAX_OFFSET
from mercato.platform.security.dependencies import AdminUser, CurrentUser

Limit = Annotated[int, Query(ge=1, le=100, description="page size (1..100)")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip")]

__all__ = ["AdminUser", "CurrentUser", "Limit", "Offset"]
