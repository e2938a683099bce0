"""Dead letters, as recorded by each consumer in its service's database: listing and replay.

Replaying a dead letter puts its envelope (same event id) back into the outbox of the same
database, addressed to the one consumer group that failed it (``target``): the service's
relay publishes it and only that group handles it; every other group skips it. The row is
marked replayed, so a second replay does not send it twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select, update

from mercato.messaging.tables import dead_letters, outbox
from mercato.platform.db import Database


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    consumer: str
    event_id: str
    event_type: str
    error: str
    attempts: int
    dead_at: datetime
    payload: str


async def list_dead_letters(
    database: Database, *, consumer: str | None = None, limit: int = 100
) -> list[DeadLetter]:
    """Dead letters not yet replayed, oldest first."""
    query = select(dead_letters).where(dead_letters.c.replayed_at.is_(None))
    if consumer:
        query = query.where(dead_letters.c.consumer == consumer)
    query = query.order_by(dead_letters.c.id).limit(limit)
    async with database.unit_of_work(read_only=True) as uow:
        rows = (await uow.session.execute(query)).mappings().all()
    return [
        DeadLetter(
            id=row["id"],
            consumer=row["consumer"],
            event_id=row["event_id"],
            event_type=row["event_type"],
            error=row["error"],
            attempts=row["attempts"],
            dead_at=row["dead_at"],
            payload=row["payload"],
        )
        for row in rows
    ]


async def replay_dead_letters(
    database: Database, *, ids: Sequence[int] | None = None, consumer: str | None = None
) -> int:
    """Re-inject dead letters (these ``ids``, or every pending one) through the outbox, in
    one transaction; return how many."""
    query = select(dead_letters).where(dead_letters.c.replayed_at.is_(None))
    if ids is not None:
        query = query.where(dead_letters.c.id.in_(list(ids)))
    if consumer:
        query = query.where(dead_letters.c.consumer == consumer)
    now = datetime.now(UTC)
    async with database.unit_of_work() as uow:
        rows = (await uow.session.execute(query.order_by(dead_letters.c.id))).mappings().all()
        for row in rows:
            await uow.session.execute(
                insert(outbox).values(
                    event_id=row["event_id"] or f"dead-letter-{row['id']}",
                    event_type=row["event_type"],
                    partition_key=None,
                    target=row["consumer"],
                    payload=row["payload"],
                    created_at=now,
                )
            )
        if rows:
            await uow.session.execute(
                update(dead_letters)
                .where(dead_letters.c.id.in_([row["id"] for row in rows]))
                .values(replayed_at=now)
            )
        await uow.commit()
    return len(rows)
