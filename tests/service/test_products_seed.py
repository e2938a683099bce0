"""`mercato seed` and the development start-up seed of an empty catalogue."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mercato.cli import app as cli
from mercato.products.app import should_seed
from mercato.settings import load_settings
from support.products import running_products


def test_seed_loads_the_demo_catalogue_once(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"ENVIRONMENT": "development", "DATA_DIR": str(tmp_path), "LOG_LEVEL": "WARNING"}
    first = runner.invoke(cli, ["seed"], env=env)
    assert first.exit_code == 0, first.output
    assert "Seeded 120 demo products; the catalogue holds 120." in first.output
    second = runner.invoke(cli, ["seed"], env=env)
    assert second.exit_code == 0, second.output
    assert "Seeded 0 demo products; the catalogue holds 120." in second.output


def test_only_development_seeds_by_default() -> None:
    def settings(**values: object) -> bool:
        return should_seed(load_settings(env_file=None, **values))

    assert settings(environment="development")
    assert not settings(environment="testing")
    assert not settings(environment="development", seed_demo_catalogue=False)
    assert settings(environment="testing", seed_demo_catalogue=True)


@pytest.mark.anyio
async def test_an_empty_catalogue_is_seeded_at_start_up() -> None:
    async with running_products(seed_demo_catalogue=True) as products:
        page = (await products.client.get("/products", params={"limit": 100})).json()
        assert page["total"] == 120
        categories = {item["category"] for item in page["items"]}
        assert len(categories) >= 5
        assert len(await products.events("product.created")) == 120
