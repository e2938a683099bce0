"""Alembic environment of the auth service (run through `mercato migrate`)."""

from mercato.auth.models import Base
from mercato.platform.migrations import run_env

run_env(Base.metadata)
