"""Alembic environment of the messaging tables (outbox, inbox, dead letters)."""

from mercato.messaging.tables import metadata
from mercato.platform.migrations import run_env

run_env(metadata)
