"""The hand-written migrations of auth and users create exactly what the models declare."""

from __future__ import annotations

import pytest
from sqlalchemy import MetaData

from mercato.auth.app import MIGRATIONS as AUTH_MIGRATIONS
from mercato.auth.models import Base as AuthBase
from mercato.platform.migrations import MigrationHistory
from mercato.users.app import MIGRATIONS as USERS_MIGRATIONS
from mercato.users.models import Base as UsersBase
from support.migrations import assert_migrations_match

pytestmark = pytest.mark.anyio

CASES = [
    pytest.param(AUTH_MIGRATIONS[:1], AuthBase.metadata, id="auth"),
    pytest.param(USERS_MIGRATIONS[:1], UsersBase.metadata, id="users"),
]


@pytest.mark.parametrize(("history", "metadata"), CASES)
async def test_the_migration_matches_the_models_on_sqlite(
    history: list[MigrationHistory], metadata: MetaData
) -> None:
    await assert_migrations_match("sqlite+aiosqlite:///:memory:", history, metadata, schema="x")


@pytest.mark.integration
@pytest.mark.parametrize(("history", "metadata"), CASES)
async def test_the_migration_matches_the_models_on_postgres(
    postgres_url: str, history: list[MigrationHistory], metadata: MetaData
) -> None:
    await assert_migrations_match(postgres_url, history, metadata, schema="public")
