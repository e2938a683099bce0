"""docker-compose.yml: valid for Debian's docker-compose and the compose specification's
schema, and checked against Mercato itself: every app container has a health check on
its own port and waits for healthy servers, every name it sets is a setting, no secret is
written in it, and with the env file filled in each service's configuration passes the
production checks start-up runs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mercato.platform.settings_sources import field_names, is_secret_name
from mercato.settings import BACKEND_SERVICES, SERVICES, Settings, load_settings
from support.deploy_container import ROOT, run, tool
from support.servers import missing

COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / "compose.env.example"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
SERVERS = ("postgres", "redis", "rabbitmq")
#: Names the containers read that are not Mercato settings: the servers' and Grafana's own.
SERVER_VARIABLES = {
    "POSTGRES_USER",
    "POSTGRES_DB",
    "POSTGRES_PASSWORD",
    "RABBITMQ_DEFAULT_USER",
    "RABBITMQ_DEFAULT_PASS",
    "GF_SECURITY_ADMIN_PASSWORD",
    "GF_USERS_ALLOW_SIGN_UP",
    "GF_ANALYTICS_REPORTING_ENABLED",
}
#: What only the env file may hold: the secrets' names, and URLs with a password.
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASS$|PRIVATE|TOKEN", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # merges the << anchors
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def mercato_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The containers of the Mercato image (built from the Dockerfile)."""
    return {name: spec for name, spec in services.items() if "build" in spec}


def env_file_values(path: Path) -> dict[str, str]:
    """``NAME=value`` lines, a double-quoted value running over several lines."""
    values: dict[str, str] = {}
    lines = iter(path.read_text().splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, value = line.partition("=")
        if value.startswith('"'):
            while not (value.endswith('"') and len(value) > 1):
                value += "\n" + next(lines)
            value = value[1:-1]
        values[name.strip()] = value
    return values


def setting_names() -> set[str]:
    return {name.upper() for name in field_names(Settings)}


# --- the validators --------------------------------------------------------------------


def test_the_compose_specification_schema_accepts_it() -> None:
    result = run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)]
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def checkout_with_env_file(tmp_path: Path) -> Path:
    """The compose file beside an env file made from the example, as a user has it after
    the first step of the quick start (the real one is never in the repository)."""
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
    (tmp_path / "deploy").mkdir()
    shutil.copy(ENV_EXAMPLE, tmp_path / "deploy" / "compose.env")
    return tmp_path


@pytest.mark.parametrize(
    "profile", [[], ["--profile", "monitoring"]], ids=["default", "monitoring"]
)
def test_docker_compose_config_accepts_it(checkout_with_env_file: Path, profile: list[str]) -> None:
    docker_compose = shutil.which("docker-compose")
    if docker_compose is None:
        missing("docker-compose is not installed (apt-get install docker-compose)")
    result = run(
        [docker_compose, *profile, "config"],
        cwd=checkout_with_env_file,
        env={"PATH": "/usr/bin:/bin"},  # no COMPOSE_* or MERCATO_IMAGE of this shell
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    # docker-compose 1.29 lists the services of every profile; monitoring has its own.
    expected = {*SERVICES, "worker", "migrate", "nginx", *SERVERS, "prometheus", "grafana"}
    assert set(resolved["services"]) == expected
    for name in ("prometheus", "grafana"):
        assert resolved["services"][name]["profiles"] == ["monitoring"], name
    # The env file reached every Mercato container.
    for name in mercato_services(resolved["services"]):
        assert "SECRET_KEY" in resolved["services"][name]["environment"], name


# --- what the file says ----------------------------------------------------------------


def _port_of(spec: dict[str, Any]) -> int:
    """The port the container's command listens on (the settings' default for its service)."""
    command = spec["command"]
    if command[0] == "worker":
        return int(command[command.index("--port") + 1])
    assert command[0] == "serve", command
    field = "port" if command[1] == "gateway" else f"{command[1]}_port"
    default: int = Settings.model_fields[field].default
    return default


def test_every_container_has_a_health_check_on_its_own_port(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, spec in services.items():
        if name == "migrate":
            assert spec["restart"] == "no"  # a one-shot
            continue
        assert spec.get("healthcheck", {}).get("test"), f"{name} has no health check"
    for name, spec in mercato_services(services).items():
        if name == "migrate":
            continue
        check = " ".join(spec["healthcheck"]["test"])
        assert f"http://127.0.0.1:{_port_of(spec)}/readyz" in check, name


def test_every_container_waits_for_what_it_needs_to_be_healthy(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, spec in services.items():
        for dependency, condition in spec.get("depends_on", {}).items():
            expected = (
                "service_completed_successfully" if dependency == "migrate" else "service_healthy"
            )
            assert condition == {"condition": expected}, (name, dependency)
    for name in (*BACKEND_SERVICES, "worker"):
        assert set(services[name]["depends_on"]) == {"migrate", *SERVERS}, name
    assert set(services["gateway"]["depends_on"]) == set(BACKEND_SERVICES)
    assert set(services["migrate"]["depends_on"]) == set(SERVERS)
    assert set(services["nginx"]["depends_on"]) == {"gateway"}


def test_each_mercato_container_runs_its_command(services: dict[str, dict[str, Any]]) -> None:
    ours = mercato_services(services)
    serving = {spec["command"][1] for spec in ours.values() if spec["command"][0] == "serve"}
    assert serving == set(SERVICES)
    assert ours["worker"]["command"][0] == "worker"
    assert ours["migrate"]["command"] == ["migrate"]
    assert len({spec["image"] for spec in ours.values()}) == 1  # one image for all
    assert services["rabbitmq"]["image"] == "rabbitmq:3-management"


def test_every_name_set_is_a_setting_and_no_secret_is_written_in_it(
    services: dict[str, dict[str, Any]],
) -> None:
    known = setting_names()
    for name, spec in services.items():
        environment: dict[str, Any] = spec.get("environment", {})
        assert isinstance(environment, dict), f"{name}: environment as a mapping, please"
        for variable, value in environment.items():
            if name in mercato_services(services):
                assert variable in known, f"{name}: {variable} is not a setting"
            else:
                assert variable in SERVER_VARIABLES, f"{name}: {variable}"
            assert not SECRET_NAME.search(variable), f"{name}: {variable} belongs in the env file"
            assert not is_secret_name(variable), f"{name}: {variable}"
            assert urlsplit(str(value)).password is None, f"{name}: {variable} holds a password"
    text = COMPOSE.read_text()
    assert "BEGIN PRIVATE KEY" not in text


def test_the_env_file_is_not_committed_and_its_example_holds_no_secret() -> None:
    for name in mercato_services(yaml.safe_load(COMPOSE.read_text())["services"]).values():
        assert name["env_file"] == "deploy/compose.env"
    ignored = run(["git", "check-ignore", "-q", "deploy/compose.env"], cwd=ROOT)
    assert ignored.returncode == 0, "deploy/compose.env is not in .gitignore"
    example = env_file_values(ENV_EXAMPLE)
    assert set(example) <= setting_names() | SERVER_VARIABLES, set(example) - setting_names()
    for variable, value in example.items():
        if SECRET_NAME.search(variable) and variable != "JWT_PRIVATE_KEYS":
            assert value == "", f"{variable} has a value in the example"
        if "://" in value:
            assert urlsplit(value).password in {None, "PASSWORD"}, variable
    assert "PASTE THE KEY HERE" in example["JWT_PRIVATE_KEYS"]


def test_the_volumes_are_named_and_declared(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used = set()
    for spec in compose["services"].values():
        for volume in spec.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                used.add(source)
    assert used == declared
    for server in SERVERS:
        assert any(not v.startswith(".") for v in compose["services"][server]["volumes"]), server


def test_nginx_runs_the_topology_site_with_the_gateway_service_upstream(
    services: dict[str, dict[str, Any]],
) -> None:
    nginx = services["nginx"]
    assert "./deploy/nginx:/etc/mercato/nginx:ro" in nginx["volumes"]
    script = nginx["command"][-1]
    assert "echo 'server gateway:8000;' > upstream.conf" in script
    site = ROOT / "deploy" / "nginx"
    if site.is_dir():  # the topology's files, which the script copies and adjusts
        for name in ("nginx.conf", "mercato.conf", "upstream.conf"):
            assert (site / name).is_file(), name
    gateway = services["gateway"]["environment"]
    assert gateway["TRUSTED_PROXIES"] == nginx["networks"]["edge"]["ipv4_address"] + "/32"


def test_the_nginx_container_script_makes_a_site_nginx_accepts(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """The nginx service's start-up script, run here with its paths under ``tmp_path`` and
    the gateway's name replaced by an address (nginx -t resolves it), ending in ``nginx -t``
    instead of the server."""
    site = ROOT / "deploy" / "nginx"
    if not (site / "nginx.conf").is_file():
        pytest.skip("deploy/nginx (the servers topology's site) is not in this checkout")
    nginx = tool("nginx")
    script = services["nginx"]["command"][-1]
    assert script.rstrip().splitlines()[-1].startswith("exec nginx ")
    prefix = tmp_path / "prefix"
    script = (
        script.replace("/var/lib/mercato-nginx", str(prefix))
        .replace("/etc/mercato/nginx", str(site))
        .replace("server gateway:8000;", "server 127.0.0.1:8000;")
        .replace("exec nginx ", f"exec {nginx} -t ")
    )
    prefix.mkdir()
    result = run(["sh", "-ec", script], timeout=60)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    assert (prefix / "upstream.conf").read_text() == "server 127.0.0.1:8000;\n"


def test_prometheus_scrapes_every_mercato_process_in_the_monitoring_profile(
    services: dict[str, dict[str, Any]],
) -> None:
    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    assert {
        "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro",
        "./deploy/prometheus/rules:/etc/prometheus/rules:ro",  # rule_files: rules/*.yml
    } <= set(prometheus["volumes"])
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["rule_files"] == ["rules/*.yml"]
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    for name, spec in mercato_services(services).items():
        if name != "migrate":
            assert f"{name}:{_port_of(spec)}" in targets, name
    assert all(
        job.get("metrics_path", "/metrics") == "/metrics" for job in config["scrape_configs"]
    )


def _filled_env_file() -> dict[str, str]:
    """The example with every blank filled in, as a user does."""
    values = env_file_values(ENV_EXAMPLE)
    key = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    values.update(
        {
            "SECRET_KEY": "k" * 48,
            "POSTGRES_PASSWORD": "pw",
            "RABBITMQ_DEFAULT_PASS": "pw",
            "JWT_PRIVATE_KEYS": key.decode(),
            "DATABASE_URL": values["DATABASE_URL"].replace("PASSWORD", "pw"),
            "BROKER_URL": values["BROKER_URL"].replace("PASSWORD", "pw"),
        }
    )
    return values


def test_each_service_configuration_passes_the_production_checks(
    services: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """What `mercato serve` would refuse at start-up (exit 2), from the compose file and the
    filled-in env file: nothing."""
    image_env = {"HOST": "0.0.0.0", "DATA_DIR": str(tmp_path)}  # the Dockerfile's
    for name, spec in mercato_services(services).items():
        command = spec["command"]
        # What each command checks the settings for (the worker: the orders service's).
        checked = {"serve": command[1:2], "worker": ["orders"], "migrate": BACKEND_SERVICES}
        checks = list(checked[command[0]])
        with monkeypatch.context() as patch:
            for variable in setting_names() | {"MERCATO_CONFIG"}:
                patch.delenv(variable, raising=False)
            patch.setenv("SECRETS_DIR", str(tmp_path / "no-secrets"))
            for variable, value in {
                **image_env,
                **_filled_env_file(),
                **spec["environment"],
            }.items():
                patch.setenv(variable, str(value))
            settings = load_settings(env_file=None)
            assert settings.is_production, name
            assert settings.problems(checks) == [], name
            for service in checks:
                if service != "gateway":
                    assert settings.database_url_for(service).startswith("postgresql+asyncpg:")
