"""Alembic environment of the orders service (run through `mercato migrate`)."""

from mercato.orders.models import Base
from mercato.platform.migrations import run_env

run_env(Base.metadata)
