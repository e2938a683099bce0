"""Every query of the users context. Never commits."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.users.models import ProfileRow


class ProfileRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, profile_id: str) -> ProfileRow | None:
        return await self.session.get(ProfileRow, profile_id)

    def add(self, profile: ProfileRow) -> None:
        self.session.add(profile)

    async def page(self, *, limit: int, offset: int) -> tuple[Sequence[ProfileRow], int]:
        """One page, oldest first (ties broken by id, so pages never overlap), and the total."""
        rows = await self.session.scalars(
            select(ProfileRow)
            .order_by(ProfileRow.created_at, ProfileRow.id)
            .limit(limit)
            .offset(offset)
        )
        total = await self.session.scalar(select(func.count()).select_from(ProfileRow))
        return rows.all(), int(total or 0)
