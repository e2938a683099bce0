"""Alembic environment of the users service (run through `mercato migrate`)."""

from mercato.platform.migrations import run_env
from mercato.users.models import Base

run_env(Base.metadata)
