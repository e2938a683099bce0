"""The documentation tells the truth: the API reference is what the code serves, links lead
to files of this repository, the README's examples reach real endpoints, every port a
process opens is listed, every test docs/security.md names exists."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from mercato import api_reference
from mercato.cli import worker
from mercato.settings import BACKEND_SERVICES, SERVICES, Settings

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PROBES = frozenset({"healthz", "readyz", "metrics"})
API_EXAMPLE = re.compile(r"/api/v1/[^\]\s\"'`)<>]+")
SECURITY_DOC = ROOT / "docs" / "security.md"
#: ``tests/x/test_y.py`` or ``tests/x/test_y.py::test_z`` (``::Class::test_z`` too); a
#: parametrized test is named without its ``[...]``.
TEST_REFERENCE = re.compile(r"\b(tests/[\w/]+\.py)(?:::(\w+(?:::\w+)*))?")


def without_generated_blocks(text: str) -> str:
    for service in BACKEND_SERVICES:
        start, end = api_reference.start_marker(service), api_reference.end_marker(service)
        if start in text:
            before, _, rest = text.partition(start)
            text = before + rest.partition(end)[2]
    return text


def test_the_api_reference_carries_the_current_endpoints() -> None:
    text = (ROOT / "docs" / "api.md").read_text()

    assert api_reference.render(text) == text, "regenerate with `mercato api-docs --write`"


def test_the_api_reference_lists_every_routed_endpoint() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    for service in BACKEND_SERVICES:
        for path, item in api_reference.service_document(service)["paths"].items():
            for method in item:
                assert f"`{method.upper()} {path}`" in text


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_lead_to_files_of_this_repository(document: Path) -> None:
    text = document.read_text()
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (document.parent / target.partition("#")[0]).resolve()
        assert path.exists(), f"{document.name}: {target} does not exist"
        assert path.is_relative_to(ROOT), f"{document.name}: {target} is outside the repository"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_document_points_to_the_team_notes_outside_the_repository(document: Path) -> None:
    text = without_generated_blocks(document.read_text())

    assert "../shared" not in text
    for name in re.findall(r"\b(?:API|DESIGN|STYLE|LIBRARIES)\.md\b", text):
        assert (ROOT / name).exists(), f"{document.name} names {name}, which is not here"


def test_the_readme_examples_reach_real_endpoints() -> None:
    routes = [
        re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$")
        for service in BACKEND_SERVICES
        for path in api_reference.service_document(service)["paths"]
    ]
    examples = {
        example.partition("?")[0]
        for example in API_EXAMPLE.findall((ROOT / "README.md").read_text())
    }

    assert examples, "the README shows no /api/v1 example"
    unknown = sorted(e for e in examples if not any(route.match(e) for route in routes))
    assert unknown == [], "the gateway answers 404 to these README examples"
    # Probes answer at each process's root; under /api/v1 they would be taken for ids.
    probes = sorted(e for e in examples if e.rstrip("/").rsplit("/", 1)[-1] in PROBES)
    assert probes == [], "probes are not under /api/v1: use the gateway's or the service's root"


def test_the_readme_lists_every_port_a_process_opens() -> None:
    defaults = Settings.model_fields
    ports = {
        service: defaults["port" if service == "gateway" else f"{service}_port"].default
        for service in SERVICES
    }
    ports["worker"] = inspect.signature(worker).parameters["port"].default
    table = (ROOT / "README.md").read_text().partition("## What runs where")[2]

    for name, port in ports.items():
        assert re.search(rf"^\| [^|]*{name}[^|]* \| {port} \|", table, re.MULTILINE), (
            f"{name} ({port}) is not in README's table of ports"
        )


def security_doc_references() -> list[tuple[str, str]]:
    """Each ``(file, test name)`` docs/security.md names; the name is empty for a file."""
    return TEST_REFERENCE.findall(SECURITY_DOC.read_text())


def defines(path: Path, name: str) -> bool:
    """Whether the test file at ``path`` defines ``name`` (``Class::test`` for a method)."""
    body = ast.parse(path.read_text()).body
    for part in name.split("::"):
        found = [
            node
            for node in body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and node.name == part
        ]
        if not found:
            return False
        body = found[0].body if isinstance(found[0], ast.ClassDef) else []
    return True


def test_every_test_the_security_page_names_exists() -> None:
    references = security_doc_references()
    missing = sorted(
        f"{file}::{name}" if name else file
        for file, name in set(references)
        if not (ROOT / file).is_file() or (name and not defines(ROOT / file, name))
    )

    assert len([name for _, name in references if name]) >= 50
    assert missing == [], "docs/security.md names tests that do not exist"


def test_the_security_page_names_every_security_test_file() -> None:
    named = {file for file, _ in security_doc_references()}
    files = {
        str(path.relative_to(ROOT)) for path in (ROOT / "tests" / "security").glob("test_*.py")
    }

    assert files, "no test file under tests/security"
    assert sorted(files - named) == [], "docs/security.md does not name these security tests"
