"""Notifications decided by the notification worker, sent after their transaction."""

import sqlalchemy as sa
from alembic import op

revision = "0002_notifications"
down_revision = "0001_orders"


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("event_id", sa.String(100), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("message", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_notifications")),
    )
    op.create_index("ix_notifications_sent_at_due_at", "notifications", ["sent_at", "due_at"])


def downgrade() -> None:
    op.drop_table("notifications")
