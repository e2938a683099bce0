"""The import rules of DESIGN.md, checked on the source tree itself."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterator
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


# --- the kernel knows no context -------------------------------------------------------

#: Every name a context goes by: the four bounded contexts and the gateway.
CONTEXT_NAMES = (*CONTEXTS, "gateway")
#: A context's name as a word of an identifier or a string (``auth_url``, ``"gateway"``,
#: ``GatewaySettings``, ``/auth/token``), not inside another word (``oauth2``, ``authorize``).
CONTEXT_WORD = re.compile(rf"(?<![a-z0-9])({'|'.join(CONTEXT_NAMES)})(?![a-z0-9])")
#: The only places the kernel may name a context, each with the reason it has to.
KERNEL_MAY_NAME = {
    # The OAuth2 token URL of the security scheme that every service's routes declare once
    # (the /docs Authorize button): a path of the public HTTP contract (shared/API.md).
    ("platform/security/dependencies.py", "/auth/token"),
}


def _prose(tree: ast.AST) -> set[int]:
    """The ids of the strings written for people: docstrings, ``description=`` texts."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
        elif isinstance(node, ast.keyword) and node.arg == "description":
            found.update(id(part) for part in ast.walk(node.value))
    return found


def names_and_strings(path: Path) -> Iterator[str]:
    """Every identifier and every string the code acts on in ``path`` (not its prose)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    prose = _prose(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            yield node.id
        elif isinstance(node, ast.Attribute):
            yield node.attr
        elif isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name
        elif isinstance(node, ast.arg | ast.keyword) and node.arg:
            yield node.arg
        elif isinstance(node, ast.alias):
            yield node.asname or node.name
        elif (
            isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose
        ):
            yield node.value


def _words(text: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text).lower()


def test_the_kernel_imports_only_the_kernel() -> None:
    """Not even the modules above the contexts (``mercato.settings``, ``cli``...), which
    import every context."""
    offenders = {
        f"{path.relative_to(SRC)} imports {name}"
        for package in KERNEL
        for path in modules_under(package)
        for name in imports_of(path)
        if name.split(".")[0] == "mercato" and name.split(".")[:2][-1] not in KERNEL
    }
    assert not offenders


def test_the_kernel_names_no_context() -> None:
    """No identifier or string of ``mercato.platform`` and ``mercato.messaging`` names a
    context (a service name is an opaque string there), nor a setting of one."""
    offenders = set()
    for package in KERNEL:
        for path in modules_under(package):
            where = str(path.relative_to(SRC))
            for text in names_and_strings(path):
                if CONTEXT_WORD.search(_words(text)) and (where, text) not in KERNEL_MAY_NAME:
                    offenders.add(f"{where}: {text!r}")
    assert not offenders


@pytest.mark.parametrize(
    ("text", "names_one"),
    [
        ("auth_url", True),
        ("/auth/token", True),
        ("GatewaySettings", True),
        ('service != "orders"', True),
        ("oauth2", False),
        ("authorize", False),
        ("trusted_proxies", False),
    ],
)
def test_the_context_check_sees_what_it_looks_for(text: str, names_one: bool) -> None:
    assert bool(CONTEXT_WORD.search(_words(text))) is names_one
