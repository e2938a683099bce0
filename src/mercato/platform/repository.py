"""What every repository of a context starts from (polar's ``kit/repository/base.py``)."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

RowT = TypeVar("RowT")


class Repository(Generic[RowT]):
    """Rows of ``model`` in the caller's session: by primary key, added, flushed. A
    context's repository sets ``model`` and adds its own queries. Never commits."""

    model: type[RowT]

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, key: Any) -> RowT | None:
        """The row whose primary key is ``key``, or None."""
        return await self.session.get(self.model, key)

    def add(self, row: RowT) -> None:
        self.session.add(row)

    async def flush(self) -> None:
        await self.session.flush()
