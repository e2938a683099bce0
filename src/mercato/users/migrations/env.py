"""Alembic environment of the users service (run through `mercato migrate`)."""

from mercato.users.models import Base
from mercato.platform.migrations import run_env

run_env(Base.metadata)
