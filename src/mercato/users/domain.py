"""Rules of the users context: what a profile may hold. Plain Python."""

from __future__ import annotations

from typing import Final

FULL_NAME_MAX: Final = 200
AGE_MIN: Final = 0
AGE_MAX: Final = 150

#: What ``PATCH /users/me`` may change; anything else is refused.
EDITABLE_FIELDS: Final = frozenset({"full_name", "age"})


def can_view(viewer_id: str, viewer_is_admin: bool, profile_id: str) -> bool:
    """A profile is visible to its owner and to administrators only."""
    return viewer_is_admin or viewer_id == profile_id
