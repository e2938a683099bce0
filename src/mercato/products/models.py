"""SQLAlchemy tables of the products service."""

from sqlalchemy.orm import DeclarativeBase

from mercato.platform.db import new_metadata


class Base(DeclarativeBase):
    metadata = new_metadata()
