"""Alembic environment of the products service (run through `mercato migrate`)."""

from mercato.products.models import Base
from mercato.platform.migrations import run_env

run_env(Base.metadata)
