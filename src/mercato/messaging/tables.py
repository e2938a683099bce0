"""The messaging tables every service database holds: outbox, inbox and dead letters.

They live in each service's own database (its PostgreSQL schema or SQLite file), with their
own Alembic history (``MESSAGING_MIGRATIONS``, version table ``alembic_version_messaging``).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from mercato.platform.db import new_metadata

metadata = new_metadata()

#: SQLite only auto-increments an INTEGER PRIMARY KEY.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

outbox = Table(
    "messaging_outbox",
    metadata,
    Column("seq", _BigId, primary_key=True, autoincrement=True),
    Column("event_id", String(100), nullable=False),
    Column("event_type", String(200), nullable=False),
    Column("partition_key", String(200), nullable=True),
    #: Replays of a dead letter are addressed to the one consumer group that failed it.
    Column("target", String(100), nullable=True),
    Column("payload", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text, nullable=True),
    Index("ix_messaging_outbox_pending", "sent_at", "seq"),
)

inbox = Table(
    "messaging_inbox",
    metadata,
    Column("consumer", String(100), primary_key=True),
    Column("event_id", String(100), primary_key=True),
    Column("event_type", String(200), nullable=False),
    Column("handled_at", DateTime(timezone=True), nullable=False, index=True),
)

dead_letters = Table(
    "messaging_dead_letters",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("consumer", String(100), nullable=False),
    Column("event_id", String(100), nullable=False),
    Column("event_type", String(200), nullable=False),
    Column("payload", Text, nullable=False),
    Column("error", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("dead_at", DateTime(timezone=True), nullable=False),
    Column("replayed_at", DateTime(timezone=True), nullable=True),
    Index("ix_messaging_dead_letters_consumer", "consumer", "replayed_at"),
)
