"""The import rules of DESIGN.md, checked on the source tree itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "mercato"
CONTEXTS = ("auth", "users", "products", "orders")
KERNEL = ("platform", "messaging")
FRAMEWORKS = ("fastapi", "starlette", "sqlalchemy", "aio_pika", "aiokafka", "redis")


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def context_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) > 1 and parts[0] == "mercato" and parts[1] in CONTEXTS:
        return parts[1]
    return None


def modules_under(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


def test_the_tree_is_where_this_test_looks() -> None:
    assert all(modules_under(package) for package in (*CONTEXTS, *KERNEL))


@pytest.mark.parametrize("package", KERNEL)
def test_the_kernel_imports_no_context(package: str) -> None:
    offenders = {
        f"{path.relative_to(SRC)} imports {name}"
        for path in modules_under(package)
        for name in imports_of(path)
        if name.split(".")[:2][-1] in (*CONTEXTS, "gateway", "cli", "serving")
        and name.startswith("mercato.")
    }
    assert not offenders


@pytest.mark.parametrize("context", CONTEXTS)
def test_a_context_imports_only_the_contracts_of_another(context: str) -> None:
    offenders = set()
    for path in modules_under(context):
        for name in imports_of(path):
            other = context_of(name)
            if other not in (None, context) and name != f"mercato.{other}.contracts":
                offenders.add(f"{path.relative_to(SRC)} imports {name}")
    assert not offenders


@pytest.mark.parametrize("context", CONTEXTS)
def test_domain_code_is_plain_python(context: str) -> None:
    domain = SRC / context / "domain.py"
    if not domain.exists():
        pytest.skip(f"{context} has no domain.py yet")
    used = {name.split(".")[0] for name in imports_of(domain)}
    assert not used & set(FRAMEWORKS)


def test_serving_does_not_import_prometheus_client() -> None:
    """`serve --workers N` sets PROMETHEUS_MULTIPROC_DIR after importing the serving code;
    prometheus-client picks its storage when first imported, so an earlier import would
    leave every worker counting in memory of its own and /metrics empty."""
    code = (
        "import sys, mercato.cli, mercato.serving, mercato.gunicorn_app; "
        "print(sorted(m for m in sys.modules if m.startswith('prometheus_client')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- the transaction owner (docs/architecture.md, "Transactions") -------------------------

#: Besides every context's ``service.py`` and the alembic ``migrations/``, the only modules
#: that may call ``.commit()``: the messaging kernel's own bookkeeping, and the definition.
TRANSACTION_OWNERS = frozenset(
    {"messaging/outbox.py", "messaging/consumer.py", "messaging/dead_letters.py", "platform/db.py"}
)
#: Calls named ``commit`` that commit no database transaction.
NOT_TRANSACTIONS = frozenset({"messaging/brokers/kafka.py"})  # Kafka's consumer offsets


def commit_calls() -> list[tuple[str, int]]:
    """Every ``<something>.commit(...)`` call under src/mercato, as (path, line)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        module = path.relative_to(SRC).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "commit"
            ):
                found.append((module, node.lineno))
    return found


def may_commit(module: str) -> bool:
    return (
        module.endswith("/service.py")
        or "migrations" in module.split("/")[:-1]
        or module in TRANSACTION_OWNERS | NOT_TRANSACTIONS
    )


def test_only_the_service_layer_and_the_messaging_kernel_commit() -> None:
    """Routes, repositories, handlers and composition roots never commit: the use case in
    ``service.py`` owns its transaction (STYLE.md 4)."""
    calls = commit_calls()
    offenders = [f"{module}:{line}" for module, line in calls if not may_commit(module)]
    assert not offenders, "commit() outside the transaction owner: " + ", ".join(offenders)
    committing = {module for module, _ in calls}
    # Not vacuous: the owners' own commits are found.
    assert committing >= {
        "auth/service.py",
        "users/service.py",
        "products/service.py",
        "orders/service.py",
    }
    assert committing >= TRANSACTION_OWNERS
