"""What the platform tests (Heroku, Elastic Beanstalk, systemd, supervisor, Lambda) share:
the repository's files, Procfile parsing, a `mercato` command line run for real, and the
settings' environment names."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from mercato.settings import Settings
from support.processes import answered

REPO = Path(__file__).resolve().parents[2]
#: Where this interpreter's console scripts are (`mercato`, `supervisord`).
BIN = Path(sys.executable).parent


def setting_names() -> set[str]:
    """Every environment name a Mercato setting answers to."""
    return {name.upper() for name in Settings.model_fields}


def procfile(path: Path) -> dict[str, str]:
    """A Procfile's process types and commands, in order; comments and blank lines skipped.
    A line that is not ``name: command`` is an error."""
    processes: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, separator, command = line.partition(":")
        if not separator or not name.strip().isidentifier() or not command.strip():
            raise ValueError(f"{path.name}:{number}: not `type: command`: {line!r}")
        if name in processes:
            raise ValueError(f"{path.name}:{number}: {name!r} twice")
        processes[name] = command.strip()
    return processes


def mercato_help(command: str) -> subprocess.CompletedProcess[str]:
    """``command`` (``mercato SUBCOMMAND [ARGS]``) with ``--help`` added: it exits 0 only if
    the subcommand exists and takes every option given."""
    words = shlex.split(command)
    assert words[0] == "mercato", command
    return subprocess.run(
        [str(BIN / "mercato"), *words[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_ok(args: list[str], *, cwd: Path, env: Mapping[str, str], timeout: float = 120) -> str:
    """Run ``args`` to its end; its output, or an assertion error with it if it failed."""
    result = subprocess.run(
        args, cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, (
        f"{args} exited {result.returncode}:\n{result.stdout}{result.stderr}"
    )
    return result.stdout + result.stderr


def clean_environment(tmp_path: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without Mercato's settings from the developer's shell,
    with the console scripts first on PATH, data and secrets under ``tmp_path``, and
    ``extra``."""
    names = setting_names() | {"MERCATO_CONFIG", "PROMETHEUS_MULTIPROC_DIR"}
    environment = {key: value for key, value in os.environ.items() if key.upper() not in names}
    environment.update(
        {
            "PATH": f"{BIN}{os.pathsep}{environment.get('PATH', '')}",
            "DATA_DIR": str(tmp_path / "var"),
            "SECRETS_DIR": str(tmp_path / "no-secrets"),
            "LOG_FORMAT": "json",
            **extra,
        }
    )
    return environment


class Process:
    """A command run through bash as a platform runs a Procfile line, in its own process
    group, its output in a log file."""

    def __init__(self, command: str, env: Mapping[str, str], cwd: Path, log: Path) -> None:
        self.command = command
        self.log_path = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                ["bash", "-c", command],
                cwd=cwd,
                env=dict(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_for(self, url: str, *, status: int = 200, timeout: float = 60) -> httpx.Response:
        """Poll ``url`` until it answers ``status``; fail with the log if the process exits
        or the time is up."""
        return answered(url, self.popen, self.log_path, status=status, within=timeout)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM to the whole group, as a platform stops a process; SIGKILL after
        ``timeout``."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        return self.popen.returncode


@contextmanager
def running(command: str, env: Mapping[str, str], cwd: Path, log: Path) -> Iterator[Process]:
    """``command`` running for the block, then stopped."""
    process = Process(command, env, cwd, log)
    try:
        yield process
    finally:
        process.stop()


def tool(name: str) -> str | None:
    """The path of ``name`` in this venv or on PATH, or None."""
    local = BIN / name
    return str(local) if local.exists() else shutil.which(name)
