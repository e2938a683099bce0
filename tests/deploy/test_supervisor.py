"""Plain servers, the supervisor way: deploy/supervisor/mercato.conf parsed (every program a
real `mercato` command, with the production layout), and run for real under `supervisord
-n` from a copy with temporary paths and free ports: migrations, the gateway and the
products service start, answer, and stop with supervisord."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import signal
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from mercato.platform.security.keys import KeySet, SigningKey
from support.deploy_platforms import BIN, REPO, clean_environment, mercato_help, tool
from support.processes import answered, log_tail
from support.servers import free_port, missing

CONF = REPO / "deploy" / "supervisor" / "mercato.conf"
INSTALLED_BINARY = "/opt/mercato/.venv/bin/mercato"
PROGRAMS = {"migrate", "gateway", "auth", "users", "products", "orders", "worker"}


def parsed(text: str) -> configparser.RawConfigParser:
    # supervisor's own format: INI with ";" comments and %(...)s expansions it does itself.
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    parser.read_string(text)
    return parser


def programs(parser: configparser.RawConfigParser) -> dict[str, configparser.SectionProxy]:
    return {
        section.removeprefix("program:mercato-"): parser[section]
        for section in parser.sections()
        if section.startswith("program:")
    }


def test_every_program_is_a_real_mercato_command_in_the_production_layout() -> None:
    found = programs(parsed(CONF.read_text()))
    assert set(found) == PROGRAMS
    for name, program in found.items():
        words = shlex.split(program["command"])
        assert words[0] == INSTALLED_BINARY, name
        result = mercato_help(shlex.join(["mercato", *words[1:]]))
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        assert program["user"] == "mercato", name
        assert program["directory"] == "/var/lib/mercato", name
        assert 'MERCATO_CONFIG="/etc/mercato/mercato.yaml"' in program["environment"], name
    assert found["migrate"]["autorestart"] == "false"
    assert int(found["migrate"]["priority"]) < min(
        int(program["priority"]) for name, program in found.items() if name != "migrate"
    )
    for name in PROGRAMS - {"migrate"}:
        assert found[name]["autorestart"] == "true", name
        assert found[name]["stopsignal"] == "TERM", name


def test_the_group_holds_every_long_running_program() -> None:
    group = parsed(CONF.read_text())["group:mercato"]["programs"].split(",")
    assert {name.removeprefix("mercato-") for name in group} == PROGRAMS - {"migrate"}


def local_copy(tmp_path: Path, ports: dict[str, int], started: set[str]) -> Path:
    """mercato.conf with this venv, temporary directories and free ports; only ``started``
    programs start (and no `user=`: this test may run as root, with no `mercato` user)."""
    text = CONF.read_text()
    text = text.replace(INSTALLED_BINARY, str(BIN / "mercato"))
    text = text.replace("/var/lib/mercato", str(tmp_path / "var"))
    text = text.replace("/var/log/mercato", str(tmp_path / "log"))
    text = text.replace("/etc/mercato/mercato.yaml", str(tmp_path / "mercato.yaml"))
    text = text.replace("--port 8005", f"--port {free_port()}")
    text = re.sub(r"(?m)^user=mercato\n", "", text)
    parser = parsed(text)
    for name, program in programs(parser).items():
        if name not in started:
            program["autostart"] = "false"
    copy = tmp_path / "mercato.conf"
    with copy.open("w") as out:
        parser.write(out)
    (tmp_path / "var").mkdir()
    (tmp_path / "log").mkdir()
    settings = {
        "ENVIRONMENT": "production",
        "SECRET_KEY": os.urandom(32).hex(),
        "ALLOWED_HOSTS": "127.0.0.1",
        "JWT_PRIVATE_KEYS": KeySet([SigningKey.generate()]).to_pem(),
        "HOST": "127.0.0.1",
        "LOG_FORMAT": "json",
        **ports,
    }
    (tmp_path / "mercato.yaml").write_text(yaml.safe_dump(settings))
    (tmp_path / "supervisord.conf").write_text(
        f"""[supervisord]
nodaemon=true
logfile={tmp_path}/supervisord.log
pidfile={tmp_path}/supervisord.pid
childlogdir={tmp_path}/log

[include]
files = {copy}
"""
    )
    return tmp_path / "supervisord.conf"


def wait_for(url: str, supervisord: subprocess.Popen[bytes], logs: Path) -> httpx.Response:
    """``url``'s 200 answer, or a failure with the tail of every program's log."""
    try:
        return answered(url, supervisord, logs.parent / "supervisord.log", within=90)
    except AssertionError as failure:
        tails = "\n".join(f"== {p.name}\n{log_tail(p, 2000)}" for p in sorted(logs.glob("*")))
        raise AssertionError(f"{failure}\n{tails}") from None


@pytest.mark.deploy
def test_supervisord_runs_migrations_the_gateway_and_a_service(tmp_path: Path) -> None:
    supervisord = tool("supervisord")
    if supervisord is None:
        missing("supervisord is not installed (make install)")
    ports = {"PORT": free_port(), "PRODUCTS_PORT": free_port()}
    for setting in ("AUTH_PORT", "USERS_PORT", "ORDERS_PORT"):
        ports[setting] = free_port()
    config = local_copy(tmp_path, ports, started={"migrate", "gateway", "products"})
    process = subprocess.Popen(
        [supervisord, "-n", "-c", str(config)],
        cwd=tmp_path,
        env=clean_environment(tmp_path, {}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        gateway = wait_for(f"http://127.0.0.1:{ports['PORT']}/healthz", process, tmp_path / "log")
        assert gateway.json()["status"] == "ok"
        # Ready once mercato-migrate has brought its schema to the head.
        products = f"http://127.0.0.1:{ports['PRODUCTS_PORT']}"
        ready = wait_for(f"{products}/readyz", process, tmp_path / "log")
        assert ready.json()["status"] == "ready"
        assert httpx.get(f"{products}/products", timeout=5).json()["items"] == []
        migrate_log = next((tmp_path / "log").glob("mercato-migrate*.log")).read_text()
        assert "Migrated: auth, users, products, orders" in migrate_log
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0
    stopped = (tmp_path / "supervisord.log").read_text()
    for program in ("mercato-gateway", "mercato-products"):
        assert f"stopped: {program} (exit status 0)" in stopped, stopped[-3000:]
