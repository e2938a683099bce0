"""A test that times out reports where every asyncio task waits, not only every thread."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HANGING_TEST = """
import asyncio

import pytest

pytestmark = pytest.mark.anyio


async def park_forever_on_an_event():
    await asyncio.Event().wait()


async def test_hangs():
    await park_forever_on_an_event()
"""


def test_a_timed_out_async_test_shows_the_stack_of_every_task(tmp_path: Path) -> None:
    (tmp_path / "test_hang.py").write_text(HANGING_TEST)
    tests = Path(__file__).resolve().parents[1]  # where tests/conftest.py is found as a plugin
    pytest_args = ["test_hang.py", "-q", "-p", "no:cacheprovider", "-p", "conftest"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *pytest_args, "--timeout=2", "--timeout-method=thread"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tests)},
        capture_output=True,
        timeout=120,
        check=False,
    )
    report = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 1, report
    assert "Timeout: asyncio tasks" in report
    # The hung coroutine and what it awaits, which no thread's stack shows:
    assert "in test_hangs" in report
    assert "in park_forever_on_an_event" in report
    assert "Stack of MainThread" in report  # pytest-timeout's own dump is still there
