"""Use cases and event handlers of the users context.

Each use case owns its transaction (it opens the unit of work and commits); the event
handler runs in the consumer runner's transaction and never commits.
"""

from __future__ import annotations

from datetime import UTC, datetime

from mercato.auth.contracts import UserRegistered
from mercato.messaging import Envelope, Handlers
from mercato.platform.db import Database, UnitOfWork
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
            **data.model_dump(include={"username", "email", "full_name", "age"}),
            created_at=data.created_at,
            updated_at=data.created_at,
        )
    )


async def profile_for(db: Database, viewer: Principal, profile_id: str) -> Profile:
    """The profile, if ``viewer`` may see it; 404 otherwise (existence is not revealed)."""
    if not domain.can_view(viewer.user_id, viewer.is_admin, profile_id):
        raise NotFound(NOT_FOUND)
    async with db.unit_of_work(read_only=True) as uow:
        profile = await ProfileRepository(uow.session).get(profile_id)
        if profile is None:
            raise NotFound(NOT_FOUND)
        return Profile.model_validate(profile)


async def update_profile(db: Database, user_id: str, patch: ProfilePatch) -> Profile:
    """Change the fields ``patch`` sets on the user's own profile; 404 if it has none."""
    async with db.unit_of_work() as uow:
        profile = await ProfileRepository(uow.session).get(user_id)
        if profile is None:
            raise NotFound(NOT_FOUND)
        changes = patch.model_dump(include=patch.model_fields_set & domain.EDITABLE_FIELDS)
        for name, value in changes.items():
            setattr(profile, name, value)
        if changes:
            profile.updated_at = datetime.now(UTC)
        await uow.session.flush()
        updated = Profile.model_validate(profile)
        await uow.commit()
    return updated


async def list_profiles(db: Database, *, limit: int, offset: int) -> ProfilePage:
    """One page of every profile, oldest first (administrators only, checked by the route)."""
    async with db.unit_of_work(read_only=True) as uow:
        rows, total = await ProfileRepository(uow.session).page(limit=limit, offset=offset)
        return ProfilePage(
            items=[Profile.model_validate(row) for row in rows],
            total=total,
            limit=limit,
            offset=offset,
        )
