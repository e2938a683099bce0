"""Use cases and event handlers of the users context. Nothing here commits."""

from __future__ import annotations

from datetime import UTC, datetime

from mercato.auth.contracts import UserRegistered
from mercato.messaging import Envelope, Handlers
from mercato.platform.db import UnitOfWork
from mercato.platform.errors import NotFound
from mercato.platform.security.tokens import Principal
from mercato.users import domain
from mercato.users.models import ProfileRow
from mercato.users.repository import ProfileRepository
from mercato.users.schemas import Profile, ProfilePage, ProfilePatch

handlers = Handlers("users")

NOT_FOUND = "No such user."


@handlers.on(UserRegistered)
async def create_profile(event: Envelope[UserRegistered], uow: UnitOfWork) -> None:
    """Make the profile of a new account. Idempotent: the inbox skips a redelivered event,
    and an existing profile (same user id) is left as it is."""
    data = event.data
    profiles = ProfileRepository(uow.session)
    if await profiles.get(data.user_id) is not None:
        return
    profiles.add(
        ProfileRow(
            id=data.user_id,
            username=data.username,
            email=data.email,
            full_name=data.full_name,
            age=data.age,
            created_at=data.created_at,
            updated_at=data.created_at,
        )
    )


async def profile_for(uow: UnitOfWork, viewer: Principal, profile_id: str) -> ProfileRow:
    """The profile, if ``viewer`` may see it; 404 otherwise (existence is not revealed)."""
    if not domain.can_view(viewer.user_id, viewer.is_admin, profile_id):
        raise NotFound(NOT_FOUND)
    profile = await ProfileRepository(uow.session).get(profile_id)
    if profile is None:
        raise NotFound(NOT_FOUND)
    return profile


async def update_profile(uow: UnitOfWork, user_id: str, patch: ProfilePatch) -> ProfileRow:
    profile = await ProfileRepository(uow.session).get(user_id)
    if profile is None:
        raise NotFound(NOT_FOUND)
    changes = patch.model_dump(include=patch.model_fields_set & domain.EDITABLE_FIELDS)
    for name, value in changes.items():
        setattr(profile, name, value)
    if changes:
        profile.updated_at = datetime.now(UTC)
    await uow.session.flush()
    return profile


async def list_profiles(uow: UnitOfWork, *, limit: int, offset: int) -> ProfilePage:
    rows, total = await ProfileRepository(uow.session).page(limit=limit, offset=offset)
    return ProfilePage(
        items=[Profile.model_validate(row) for row in rows], total=total, limit=limit, offset=offset
    )
