"""The `mercato` command as an operator meets it: start-up waits and refusals, errors that
say what is wrong in one line, help that reads well."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from mercato.cli import app as cli
from mercato.platform.startup import Dependency, DependencyUnavailable, wait_for
from mercato.settings import Settings
from support.servers import free_port

PASSWORD = "hunter2-not-shown"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Embedded defaults in a fresh directory: no setting leaks in from the machine."""
    for name in [*Settings.model_fields, "MERCATO_CONFIG", "MERCATO_ADMIN_USERNAME"]:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("SECRETS_DIR", str(tmp_path / "no-secrets"))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "var"))
    monkeypatch.chdir(tmp_path)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def assert_one_line_naming(result: Result, setting: str, port: int) -> None:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        f"mercato: {setting} (127.0.0.1:{port}) did not answer within 0.3 s (STARTUP_TIMEOUT)"
    )
    assert PASSWORD not in result.output + result.stderr
    assert "Traceback" not in result.output + result.stderr


class TestStartUpWaitsForItsServers:
    @pytest.mark.parametrize(
        ("command", "setting"),
        [
            (["migrate"], "DATABASE_URL"),
            (["migrate", "--service", "orders"], "ORDERS_DATABASE_URL"),
            (["seed"], "PRODUCTS_DATABASE_URL"),
        ],
    )
    def test_an_unreachable_database_is_one_line_and_exit_1(
        self, monkeypatch: pytest.MonkeyPatch, command: list[str], setting: str
    ) -> None:
        port = free_port()
        monkeypatch.setenv("STARTUP_TIMEOUT", "0.3")
        monkeypatch.setenv(setting, f"postgresql://app:{PASSWORD}@127.0.0.1:{port}/shop")

        result = invoke(*command)

        assert_one_line_naming(result, setting, port)
        assert f"waiting up to 0.3 s for {setting} (127.0.0.1:{port})" in result.stderr
        assert "Migrated" not in result.output

    @pytest.mark.anyio
    async def test_a_server_that_comes_up_while_waited_for_is_used(self) -> None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        waited: list[Dependency] = []

        def start_listening(dependency: Dependency) -> None:
            waited.append(dependency)
            listener.listen()

        redis = Dependency("REDIS_URL", "127.0.0.1", port)
        try:
            await wait_for([redis], 30, on_wait=start_listening)
        finally:
            listener.close()

        assert waited == [redis]

    @pytest.mark.anyio
    async def test_the_first_server_that_stays_silent_is_named(self) -> None:
        silent = Dependency("BROKER_URL", "127.0.0.1", free_port())

        with pytest.raises(DependencyUnavailable) as caught:
            await wait_for([silent], 0.2)

        assert caught.value.dependency == silent


class TestEveryCommandRefusesTheSameWay:
    @pytest.mark.parametrize(
        "command",
        [["up"], ["serve", "products"], ["migrate"], ["seed"], ["worker"], ["config", "check"]],
    )
    def test_a_garbage_database_url_is_one_line_and_exit_2(
        self, monkeypatch: pytest.MonkeyPatch, command: list[str]
    ) -> None:
        monkeypatch.setenv("DATABASE_URL", "garbage")

        result = invoke(*command)

        assert result.exit_code == 2, result.output
        [line] = result.stderr.splitlines()
        assert line.startswith("mercato: DATABASE_URL: is not a database URL")


class TestOneLineErrors:
    def test_migrating_the_gateway_is_an_error(self) -> None:
        result = invoke("migrate", "--service", "gateway")

        assert result.exit_code == 2
        assert result.stderr == (
            "mercato: the gateway has no database; choose one of auth, users, products, orders\n"
        )
        assert "Migrated" not in result.output

    def test_replaying_an_unknown_dead_letter_exits_1_saying_so(self) -> None:
        assert invoke("migrate", "--service", "products").exit_code == 0

        result = invoke("events", "dlq", "replay", "--service", "products", "--id", "99")

        assert result.exit_code == 1, result.output
        assert "no pending dead letter #99 in products" in result.stderr


class TestHelpAndVersion:
    def test_version(self) -> None:
        from importlib.metadata import version

        result = invoke("--version")

        assert result.exit_code == 0
        assert result.output == f"mercato {version('mercato')}\n"

    @pytest.mark.parametrize(
        "command",
        [
            [],
            ["up"],
            ["serve"],
            ["worker"],
            ["migrate"],
            ["create-admin"],
            ["config", "check"],
            ["config", "docs"],
            ["api-docs"],
            ["events", "dlq", "replay"],
        ],
    )
    def test_help_names_no_python_types(self, command: list[str]) -> None:
        result = invoke(*command, "--help")

        assert result.exit_code == 0
        assert "<bool>" not in result.output
        assert "list[" not in result.output

    def test_every_command_is_summed_up_on_one_line(self) -> None:
        lines = invoke("--help").output.splitlines()
        commands = lines[lines.index("Commands:") + 1 :]

        assert [line.split()[0] for line in commands if line.strip()] == [
            "up",
            "serve",
            "worker",
            "migrate",
            "seed",
            "create-admin",
            "status",
            "api-docs",
            "config",
            "events",
        ]

    def test_a_docstring_paragraph_is_wrapped_as_one(self) -> None:
        output = invoke("create-admin", "--help").output

        assert "role. The password is prompted for" in " ".join(output.split())


def test_status_once_with_nothing_running_names_every_service_down_and_exits_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for setting in ("PORT", "AUTH_PORT", "USERS_PORT", "PRODUCTS_PORT", "ORDERS_PORT"):
        monkeypatch.setenv(setting, str(free_port()))
    result = invoke("status", "--once", "--interval", "0.1")
    assert result.exit_code == 1, result.output
    for service in ("gateway", "auth", "users", "products", "orders"):
        assert re.search(rf"│ {service} +│ DOWN \(ConnectionRefusedError\)", result.output)


def test_status_refuses_a_malformed_url_option_in_one_line() -> None:
    result = invoke("status", "--once", "--url", "nowhere")
    assert result.exit_code == 2
    assert result.stderr.strip() == "mercato: --url takes NAME=http://host:port, not 'nowhere'"
