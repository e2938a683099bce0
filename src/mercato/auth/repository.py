"""Every query of the auth context. Never commits."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mercato.auth.models import RefreshFamilyRow, RefreshTokenRow, UserRow
from mercato.platform.repository import Repository


class UserRepository(Repository[UserRow]):
    model = UserRow

    async def by_username_key(self, key: str) -> UserRow | None:
        found = await self.session.scalars(select(UserRow).where(UserRow.username_key == key))
        return found.first()

    async def taken(self, username_key: str, email_key: str) -> tuple[bool, bool]:
        """Whether the username and the e-mail are already used (by anyone)."""
        rows = await self.session.execute(
            select(UserRow.username_key, UserRow.email_key).where(
                or_(UserRow.username_key == username_key, UserRow.email_key == email_key)
            )
        )
        pairs = rows.all()
        return (
            any(row.username_key == username_key for row in pairs),
            any(row.email_key == email_key for row in pairs),
        )


class RefreshTokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add_family(self, family: RefreshFamilyRow) -> None:
        self.session.add(family)

    def add_token(self, token: RefreshTokenRow) -> None:
        self.session.add(token)

    async def get_for_update(
        self, token_hash: str
    ) -> tuple[RefreshTokenRow, RefreshFamilyRow] | None:
        """The token and its family, locked against a concurrent rotation."""
        statement = (
            select(RefreshTokenRow, RefreshFamilyRow)
            .join(RefreshFamilyRow, RefreshFamilyRow.id == RefreshTokenRow.family_id)
            .where(RefreshTokenRow.token_hash == token_hash)
            .with_for_update()
        )
        row = (await self.session.execute(statement)).first()
        return (row[0], row[1]) if row is not None else None

    async def mark_used(self, token_hash: str, now: datetime) -> bool:
        """Mark the token rotated; ``False`` if someone rotated it first."""
        result = await self.session.execute(
            update(RefreshTokenRow)
            .where(RefreshTokenRow.token_hash == token_hash, RefreshTokenRow.used_at.is_(None))
            .values(used_at=now)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def revoke_family(self, family_id: str, now: datetime, reason: str) -> None:
        await self.session.execute(
            update(RefreshFamilyRow)
            .where(RefreshFamilyRow.id == family_id, RefreshFamilyRow.revoked_at.is_(None))
            .values(revoked_at=now, revoked_reason=reason)
        )
