"""What the container, compose and gunicorn tests share: reading the Dockerfile, finding a
tool, and running a Mercato process on the embedded defaults with its data under a
directory of its own."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.servers import missing

ROOT = Path(__file__).resolve().parents[2]

#: Settings a developer's shell may hold that would point a test's process elsewhere.
Completed = subprocess.CompletedProcess[str]

FOREIGN_SETTINGS = ("DATABASE_URL", "REDIS_URL", "BROKER_URL", "MERCATO_CONFIG", "SMTP_URL")


def tool(name: str) -> str:
    """The path of ``name``: the virtualenv's own (make install puts the linters there),
    else the machine's; skips (fails under CI) when neither has it."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        missing(f"{name} is not installed")
    return found


def run(command: Sequence[str], *, timeout: float = 120, **options: Any) -> Completed:
    """``command`` run to its end (at most ``timeout`` seconds), its output kept as text;
    the caller checks the exit code, so that a failure shows the output."""
    return subprocess.run(
        list(command), capture_output=True, text=True, timeout=timeout, check=False, **options
    )


# --- the Dockerfile ------------------------------------------------------------------------


@dataclass
class Stage:
    """One ``FROM`` of a Dockerfile: its base, its name and its instructions in order."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [rest for kind, rest in self.instructions if kind == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name} has no {keyword}"
        return found[-1]

    def env(self) -> dict[str, str]:
        """The stage's ``ENV KEY=VALUE ...`` settings (``$NAME`` left as written)."""
        values: dict[str, str] = {}
        for line in self.all("ENV"):
            for word in shlex.split(line):
                key, _, value = word.partition("=")
                values[key] = value
        return values

    def exec_form(self, keyword: str) -> list[str]:
        """The JSON (exec) form of the last ``keyword`` (ENTRYPOINT, CMD)."""
        value: list[str] = json.loads(self.last(keyword))
        return value


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(stage for stage in self.stages if stage.name == name)

    @property
    def runtime(self) -> Stage:
        """The last stage: what the image is."""
        return self.stages[-1]

    def base_of(self, stage: Stage) -> str:
        """A stage's base image with the global ARGs filled in."""
        base = stage.base
        for name, value in self.args.items():
            base = base.replace(f"${{{name}}}", value).replace(f"${name}", value)
        return base


def logical_lines(text: str) -> list[str]:
    """The instructions of a Dockerfile: comments dropped, continuation lines joined."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1].strip() + " "
            continue
        lines.append((current + stripped).strip())
        current = ""
    if current:
        lines.append(current.strip())
    return lines


def read_dockerfile(path: Path = ROOT / "Dockerfile") -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages and keyword == "ARG":
            key, _, value = rest.partition("=")
            args[key] = value
        elif stages:
            stages[-1].instructions.append((keyword, rest.strip()))
    return Dockerfile(args, stages)


def run_command(instruction: str) -> str:
    """A ``RUN`` instruction's shell command, without its ``--mount=`` (and such) options."""
    words = instruction.split()
    while words and words[0].startswith("--"):
        words.pop(0)
    return " ".join(words)


# --- running a process ---------------------------------------------------------------------


def process_env(data_dir: Path, extra: Mapping[str, str] = {}) -> dict[str, str]:
    """This process's environment without the settings that would point elsewhere, on the
    embedded defaults (development profile), with the data and the secrets directory under
    ``data_dir``'s parent, JSON logs, and ``extra``."""
    env = {key: value for key, value in os.environ.items() if key not in FOREIGN_SETTINGS}
    env.update(
        {
            "ENVIRONMENT": "development",
            "DATA_DIR": str(data_dir),
            "SECRETS_DIR": str(data_dir.parent / "no-secrets"),
            "LOG_FORMAT": "json",
            "HOST": "127.0.0.1",
            **extra,
        }
    )
    return env


def stop(process: subprocess.Popen[bytes], *, within: float = 40) -> int:
    """SIGTERM, as an orchestrator stops a container; SIGKILL after ``within`` seconds.
    Returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(within)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def children(pid: int) -> set[int]:
    """The processes ``pid`` started (gunicorn's workers)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(child) for child in path.read_text().split()} if path.exists() else set()


def start(
    command: Sequence[str], *, cwd: Path, env: Mapping[str, str], log: Path
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            list(command), cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT
        )
