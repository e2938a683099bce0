"""The `mercato` command against the real servers: a provider's postgres:// URL works as
given, and start-up does not wait for servers that answer."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from mercato.cli import app as cli
from mercato.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [*Settings.model_fields, "MERCATO_CONFIG"]:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("SECRETS_DIR", str(tmp_path / "no-secrets"))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "var"))
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_migrate_takes_a_url_without_a_driver(
    monkeypatch: pytest.MonkeyPatch, postgres_url: str, redis_url: str, scheme: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", postgres_url.replace("postgresql+asyncpg", scheme, 1))
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("STARTUP_TIMEOUT", "5")

    result = CliRunner().invoke(cli, ["migrate"])

    assert result.exit_code == 0, result.output + result.stderr
    assert result.stdout.strip().splitlines()[-1] == "Migrated: auth, users, products, orders"
    assert "waiting" not in result.stderr


@pytest.mark.parametrize("command", ["migrate", "seed"])
def test_a_server_that_refuses_is_one_line_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, postgres_server_url: str, command: str
) -> None:
    parts = urlsplit(postgres_server_url)
    missing = parts._replace(path="/mercato_no_such_database").geturl()
    monkeypatch.setenv("DATABASE_URL", missing)

    result = CliRunner().invoke(cli, [command])

    assert result.exit_code == 1, result.output
    assert result.stderr == (
        f"mercato: DATABASE_URL ({parts.hostname}:{parts.port or 5432}) refused:"
        ' database "mercato_no_such_database" does not exist\n'
    )
