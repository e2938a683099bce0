"""Outbox, inbox and dead letters."""

import sqlalchemy as sa
from alembic import op

revision = "0001_messaging"
down_revision = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "messaging_outbox",
        sa.Column("seq", BigId, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(100), nullable=False),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("partition_key", sa.String(200), nullable=True),
        sa.Column("target", sa.String(100), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_messaging_outbox")),
    )
    op.create_index("ix_messaging_outbox_pending", "messaging_outbox", ["sent_at", "seq"])
    op.create_table(
        "messaging_inbox",
        sa.Column("consumer", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(100), nullable=False),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id", name=op.f("pk_messaging_inbox")),
    )
    op.create_index(op.f("ix_messaging_inbox_handled_at"), "messaging_inbox", ["handled_at"])
    op.create_table(
        "messaging_dead_letters",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("consumer", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(100), nullable=False),
        sa.Column("event_type", sa.String(200), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("dead_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messaging_dead_letters")),
    )
    op.create_index(
        "ix_messaging_dead_letters_consumer", "messaging_dead_letters", ["consumer", "replayed_at"]
    )


def downgrade() -> None:
    op.drop_table("messaging_dead_letters")
    op.drop_table("messaging_inbox")
    op.drop_table("messaging_outbox")
