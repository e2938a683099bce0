"""The configuration reference and .env.example are what the code generates."""

from __future__ import annotations

from pathlib import Path

import pytest

from mercato.config_docs import (
    README_END,
    README_START,
    configuration_markdown,
    env_example,
    readme_table,
)
from mercato.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
REGENERATE = (
    "regenerate with `mercato config docs > docs/configuration.md` and "
    "`mercato config docs --env > .env.example`"
)


def test_every_setting_says_what_it_does() -> None:
    undocumented = [name for name, field in Settings.model_fields.items() if not field.description]

    assert undocumented == []


@pytest.mark.parametrize(
    ("path", "generate"),
    [("docs/configuration.md", configuration_markdown), (".env.example", env_example)],
)
def test_the_committed_file_is_current(path: str, generate: object) -> None:
    assert callable(generate)
    assert (ROOT / path).read_text() == generate(), REGENERATE


def test_every_setting_is_in_both_files() -> None:
    reference, example = configuration_markdown(), env_example()
    for name in Settings.model_fields:
        variable = "MERCATO_" + name.upper() if name.startswith("admin_") else name.upper()
        assert f"`{variable}`" in reference
        assert f"# {variable}=" in example


def test_the_readme_carries_the_current_table() -> None:
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index(README_START), readme.index(README_END) + len(README_END) + 1

    assert readme[start:end] == readme_table(), "regenerate with `mercato config docs --readme`"
