"""Every query of the users context. Never commits."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select

from mercato.platform.repository import Repository
from mercato.users.models import ProfileRow


class ProfileRepository(Repository[ProfileRow]):
    model = ProfileRow

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
