"""Schema fuzzing with schemathesis against a real `mercato up` (docs/security.md).

Every service's own schema and the gateway's merged one are fuzzed, signed in as the
bootstrapped administrator (so that every operation, admin ones included, is reached), with
every check on. ``tests/e2e/test_schema_fuzz.py`` runs a fast profile through schemathesis'
Python API in `make test`; ``python -m support.fuzzing`` (`make security`) the thorough one
through its command line: the coverage, fuzzing and stateful phases, at least
:data:`THOROUGH_EXAMPLES` examples per operation, reports under ``var/security/``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import httpx

from support.processes import RunningMercato, free_ports, mercato_up

ROOT: Final = Path(__file__).resolve().parents[2]
CONFIG: Final = ROOT / "schemathesis.toml"
#: The gateway first: it is what clients see; then each service behind it.
TARGETS: Final = ("gateway", "auth", "users", "products", "orders")
ADMIN, ADMIN_PASSWORD = "fuzzadmin", "Fuzz-Adm1n-Pass"
THOROUGH_EXAMPLES: Final = 100
PHASES: Final = "examples,coverage,fuzzing,stateful"

#: `mercato up` for fuzzing: an administrator, and the gateway's per-client limits out of
#: the way (thousands of requests a minute from one address are the point here; the limits
#: have tests of their own). The login limits stay: their 429 is documented.
FUZZ_ENV: Final = {
    "MERCATO_ADMIN_USERNAME": ADMIN,
    "MERCATO_ADMIN_PASSWORD": ADMIN_PASSWORD,
    "RATE_LIMIT_API": "1000000/minute",
    "RATE_LIMIT_USER": "1000000/minute",
    "ACCESS_TOKEN_TTL": "86400",  # a thorough run outlasts the default 15 minutes
}


@contextmanager
def fuzzable(tmp_path: Path) -> Iterator[RunningMercato]:
    """`mercato up` on free ports with :data:`FUZZ_ENV`, its data under ``tmp_path``."""
    with mercato_up(tmp_path, free_ports(), env=FUZZ_ENV) as running:
        yield running


def admin_token(running: RunningMercato) -> str:
    """A fresh access token of the bootstrapped administrator, through the gateway."""
    answer = httpx.post(
        f"{running.base_url}/api/v1/auth/login",
        json={"username": ADMIN, "password": ADMIN_PASSWORD},
        timeout=10,
    )
    answer.raise_for_status()
    token: str = answer.json()["access_token"]
    return token


def schema_url(running: RunningMercato, target: str) -> str:
    return f"{running.url(target)}/openapi.json"


def thorough_command(url: str, token: str, report_dir: Path) -> list[str]:
    """The schemathesis command line of the thorough profile for one schema."""
    return [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "run",
        url,
        "--checks",
        "all",
        "--phases",
        PHASES,
        "--max-examples",
        str(THOROUGH_EXAMPLES),
        "--header",
        f"Authorization: Bearer {token}",
        # One worker: CPython 3.11 before 3.11.8 can fail `ast.parse` when two threads
        # parse at once ("AST constructor recursion depth mismatch"), which hypothesis
        # does to describe its strategies.
        "--workers",
        "1",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(report_dir),
    ]


def main() -> int:
    """The thorough profile against every target; non-zero when any of them found anything."""
    reports = ROOT / "var" / "security"
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mercato-fuzz-") as tmp, fuzzable(Path(tmp)) as up:
        # Signed in once: fuzzing the login operations uses up the login limit of this
        # client address for a minute (their 429 is documented).
        token = admin_token(up)
        for target in TARGETS:
            print(f"\n==> schemathesis: {target} ({schema_url(up, target)})", flush=True)
            command = thorough_command(schema_url(up, target), token, reports / target)
            if subprocess.run(command, check=False).returncode != 0:
                failed.append(target)
    if failed:
        print(f"\nschema fuzzing found problems in: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"\nschema fuzzing: no finding in {', '.join(TARGETS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
