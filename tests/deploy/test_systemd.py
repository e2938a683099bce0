"""Plain servers: the systemd units in deploy/systemd, under `systemd-analyze verify` (with
the ExecStart path pointed at this venv's `mercato`, which verify requires to exist) and
`systemd-analyze security`, and what each unit promises: the dedicated user, the settings
file, restarts, hardening, migrations first."""

from __future__ import annotations

import re
import shlex
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

from mercato.settings import SERVICES
from support.deploy_platforms import BIN, REPO, mercato_help, setting_names, tool
from support.servers import missing

UNITS = REPO / "deploy" / "systemd"
INSTALLED_BINARY = "/opt/mercato/.venv/bin/mercato"
PROCESS_UNITS = [f"mercato@{service}.service" for service in SERVICES] + ["mercato-worker.service"]
ALL_UNITS = [*PROCESS_UNITS, "mercato-migrate.service", "mercato.target"]
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "RestrictSUIDSGID": "yes",
    "StateDirectory": "mercato",
}


def unit_file(name: str) -> Path:
    """The file a unit name loads from (an instance loads its template)."""
    template = re.sub(r"@[^.]+\.", "@.", name)
    return UNITS / template


def directives(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit's directives by section, every value of a repeated key kept in order, with
    the instance name put in for ``%i``."""
    instance = name.partition("@")[2].rpartition(".")[0]
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = ""
    for line in unit_file(name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        sections[section][key].append(value.replace("%i", instance))
    return sections


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """The units as installed on a machine whose venv is this one."""
    for path in UNITS.glob("mercato*"):
        if path.suffix in {".service", ".target"}:
            text = path.read_text().replace(INSTALLED_BINARY, str(BIN / "mercato"))
            (tmp_path / path.name).write_text(text)
    return tmp_path


def systemd_analyze(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    analyze = tool("systemd-analyze")
    if analyze is None:
        missing("systemd-analyze is not installed")
    return subprocess.run(
        [analyze, *args],
        cwd=directory,
        # The units' directory first, so that the template, the migration unit and the
        # target are found; then the system's own units (a trailing colon).
        env={"SYSTEMD_UNIT_PATH": f"{directory}:", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def verify(directory: Path, units: list[str]) -> subprocess.CompletedProcess[str]:
    # No systemd runs as PID 1 here: --man=no (no man pages to look up for Documentation=);
    # verify exits 0 on an unknown key or a bad value and only says so, hence the output.
    return systemd_analyze(directory, "verify", "--man=no", *units)


def test_every_unit_passes_systemd_analyze_verify(installed: Path) -> None:
    result = verify(installed, ALL_UNITS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


@pytest.mark.parametrize(
    ("line", "typo"),
    [("Restart=on-failure", "Restrt=on-failure"), ("ProtectSystem=strict", "ProtectSystem=strikt")],
)
def test_verify_catches_a_typo(installed: Path, line: str, typo: str) -> None:
    template = installed / "mercato@.service"
    template.write_text(template.read_text().replace(line, typo))
    result = verify(installed, ["mercato@products.service"])
    # The check above fails on any output: here there must be some, naming the file.
    assert "mercato@.service" in result.stdout + result.stderr


def test_every_process_is_hardened(installed: Path) -> None:
    for unit in [*PROCESS_UNITS, "mercato-migrate.service"]:
        # Exposure 2.0 or less on systemd's 0..10 scale ("OK"; the threshold is x10).
        result = systemd_analyze(
            installed, "security", "--offline=yes", "--man=no", "--threshold=20", unit
        )
        assert result.returncode == 0, unit + "\n" + result.stdout + result.stderr


@pytest.mark.parametrize("unit", [*PROCESS_UNITS, "mercato-migrate.service"])
def test_each_unit_runs_as_the_mercato_user_with_the_settings_file(unit: str) -> None:
    service = directives(unit)["Service"]
    assert service["User"] == ["mercato"]
    assert "/etc/mercato/mercato.env" in service["EnvironmentFile"]
    assert service["WorkingDirectory"] == ["/var/lib/mercato"]
    assert "DATA_DIR=/var/lib/mercato" in service["Environment"]
    for key, value in HARDENING.items():
        assert service[key] == [value], f"{unit}: {key}"


@pytest.mark.parametrize("unit", PROCESS_UNITS)
def test_each_process_restarts_and_migrates_first(unit: str) -> None:
    sections = directives(unit)
    assert sections["Service"]["Restart"] == ["on-failure"]
    assert "mercato-migrate.service" in sections["Unit"]["Requires"]
    assert "mercato-migrate.service" in sections["Unit"]["After"][0].split()
    assert sections["Install"]["WantedBy"] == ["mercato.target"]
    assert unit in " ".join(directives("mercato.target")["Unit"]["Wants"]).split()


def test_migrations_are_a_oneshot() -> None:
    service = directives("mercato-migrate.service")["Service"]
    assert service["Type"] == ["oneshot"]
    assert service["RemainAfterExit"] == ["yes"]
    assert service["ExecStart"] == [f"{INSTALLED_BINARY} migrate"]


@pytest.mark.parametrize("unit", [*PROCESS_UNITS, "mercato-migrate.service"])
def test_each_command_is_a_real_mercato_command(unit: str) -> None:
    service = directives(unit)["Service"]
    defaults = dict(value.split("=", 1) for value in service["Environment"])
    (command,) = service["ExecStart"]
    command = re.sub(r"\$\{(\w+)\}", lambda match: defaults[match[1]], command)
    words = shlex.split(command)
    assert words[0] == INSTALLED_BINARY
    result = mercato_help(shlex.join(["mercato", *words[1:]]))
    assert result.returncode == 0, command + "\n" + result.stdout + result.stderr


def test_the_example_settings_file_names_real_settings() -> None:
    names = [
        line.partition("=")[0]
        for line in (UNITS / "mercato.env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert set(names) <= setting_names()
    assert {"ENVIRONMENT", "SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL"} <= set(names)
