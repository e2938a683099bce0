"""Alembic environment of the products service (run through `mercato migrate`)."""

from mercato.platform.migrations import run_env
from mercato.products.models import Base

run_env(Base.metadata)
