"""AWS Elastic Beanstalk: .ebextensions and .platform, checked as the Python platform reads
them: the health check on /readyz, the environment names real settings, the prebuild hook
run on a copy of the bundle, and the nginx extensions under `nginx -t`."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mercato.settings import Settings
from support.deploy_platforms import BIN, REPO, procfile, run_ok, setting_names, tool
from support.servers import free_port, missing

HOOK = REPO / ".platform" / "hooks" / "prebuild" / "01_mercato.sh"
NGINX = REPO / ".platform" / "nginx" / "conf.d"


def ebextensions() -> dict[str, Any]:
    """Every .ebextensions/*.config merged (Beanstalk applies them in name order)."""
    merged: dict[str, Any] = {"option_settings": {}, "container_commands": {}}
    files = sorted((REPO / ".ebextensions").glob("*.config"))
    assert files
    for path in files:
        document = yaml.safe_load(path.read_text())
        assert set(document) <= {"option_settings", "container_commands", "commands", "files"}
        for key in ("option_settings", "container_commands"):
            merged[key].update(document.get(key) or {})
    return merged


def test_the_health_check_is_readiness() -> None:
    options = ebextensions()["option_settings"]
    assert options["aws:elasticbeanstalk:application"]["Application Healthcheck URL"] == "/readyz"
    process = options["aws:elasticbeanstalk:environment:process:default"]
    assert process["HealthCheckPath"] == "/readyz"
    assert process["MatcherHTTPCode"] == "200"


def test_the_environment_names_real_settings_and_valid_values() -> None:
    environment = ebextensions()["option_settings"]["aws:elasticbeanstalk:application:environment"]
    assert set(environment) <= setting_names()
    assert environment["ENVIRONMENT"] == "production"
    # The values are what the settings accept (production's own checks need the secrets
    # that `eb setenv` gives, so they are not asked here).
    settings = Settings(**{name.lower(): value for name, value in environment.items()})
    # The platform's nginx proxies to 127.0.0.1:$PORT, where the gateway listens.
    assert settings.port == 8000
    assert settings.host == "127.0.0.1"


def test_migrations_run_once_per_deployment_in_the_platforms_virtualenv() -> None:
    commands = ebextensions()["container_commands"]
    assert list(commands) == ["01_migrate"]
    migrate = commands["01_migrate"]
    assert migrate["leader_only"] is True
    assert migrate["command"].endswith("&& mercato migrate")
    assert 'source "$PYTHONPATH/activate"' in migrate["command"]


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """What `eb deploy` uploads, as far as the hook reads it."""
    staging = tmp_path / "staging"
    staging.mkdir()
    for name in ("Procfile", "pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(REPO / name, staging / name)
    shutil.copytree(REPO / "src", staging / "src")
    return staging


def run_hook(bundle: Path) -> None:
    run_ok(
        ["bash", str(HOOK)], cwd=bundle, env={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(bundle)}
    )


def test_the_prebuild_hook_leaves_the_web_process_first_and_no_release(bundle: Path) -> None:
    assert HOOK.stat().st_mode & 0o111, "Beanstalk runs only executable hooks"
    heroku = procfile(bundle / "Procfile")
    run_hook(bundle)
    processes = procfile(bundle / "Procfile")
    assert list(processes) == [name for name in heroku if name != "release"]
    # The web process: the gateway under gunicorn with uvicorn workers (ASGI), on PORT.
    web = shlex.split(processes["web"])
    assert web[:3] == ["mercato", "serve", "gateway"]
    assert not {"--port", "--bind"} & set(web)
    assert all(command.startswith("mercato ") for command in processes.values())


def test_the_prebuild_hook_writes_the_locked_runtime_requirements(bundle: Path) -> None:
    run_hook(bundle)
    lines = [
        line.strip()
        for line in (bundle / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "." in lines  # the project itself: the `mercato` command
    pinned = {line.split("==")[0].lower() for line in lines if "==" in line}
    assert {"fastapi", "gunicorn", "uvicorn", "uvicorn-worker", "asyncpg"} <= pinned
    assert not {"pytest", "ruff", "mypy"} & pinned  # no development groups
    # A requirements.txt in the bundle is left as it is.
    (bundle / "requirements.txt").write_text("mercato\n")
    run_hook(bundle)
    assert (bundle / "requirements.txt").read_text() == "mercato\n"


def test_the_nginx_extensions_pass_nginx_t(tmp_path: Path) -> None:
    nginx = tool("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        missing("nginx is not installed")
    conf = tmp_path / "conf.d"
    shutil.copytree(NGINX, conf)
    # The shape of the platform's own nginx.conf: conf.d/*.conf in http, and
    # conf.d/elasticbeanstalk/*.conf in the server that proxies to the web process.
    (tmp_path / "nginx.conf").write_text(
        f"""
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{}}
http {{
    access_log off;
    include {conf}/*.conf;
    server {{
        listen 127.0.0.1:{free_port()};
        location / {{
            proxy_pass http://127.0.0.1:8000;
        }}
        include {conf}/elasticbeanstalk/*.conf;
    }}
}}
"""
    )
    result = subprocess.run(
        [
            nginx,
            "-t",
            "-e",
            str(tmp_path / "error.log"),
            "-p",
            str(tmp_path),
            "-c",
            str(tmp_path / "nginx.conf"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
