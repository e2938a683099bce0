"""Heroku: the root Procfile, app.json and .python-version, checked against what Heroku
reads, and the release, web and one service line run for real on PostgreSQL with the
``postgres://`` URL Heroku sets."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from mercato.platform.security.keys import KeySet, SigningKey
from mercato.settings import SERVICES
from support.deploy_platforms import (
    BIN,
    REPO,
    clean_environment,
    mercato_help,
    procfile,
    run_ok,
    running,
    setting_names,
)
from support.servers import free_port

PROCFILES = {"heroku": REPO / "Procfile", "local": REPO / "deploy" / "Procfile.local"}
#: The add-ons app.json may name (Heroku's Postgres and Redis, CloudAMQP's RabbitMQ).
KNOWN_ADDONS = {"heroku-postgresql", "heroku-redis", "cloudamqp"}
#: The keys Heroku's app.json schema defines.
APP_JSON_KEYS = {
    "name",
    "description",
    "keywords",
    "website",
    "repository",
    "logo",
    "success_url",
    "scripts",
    "env",
    "formation",
    "image",
    "addons",
    "buildpacks",
    "environments",
    "stack",
}
ENV_KEYS = {"description", "value", "required", "generator"}


def app_json() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((REPO / "app.json").read_text())
    return document


@pytest.mark.parametrize("name", sorted(PROCFILES))
def test_every_procfile_line_is_a_real_mercato_command(name: str) -> None:
    processes = procfile(PROCFILES[name])
    for process, command in processes.items():
        words = shlex.split(command)
        assert words[0] == "mercato", f"{process}: {command}"
        if words[1] == "serve":
            assert words[2] in SERVICES, f"{process}: no service {words[2]!r}"
        result = mercato_help(command)
        assert result.returncode == 0, f"{process}: {command}\n{result.stdout}{result.stderr}"


def test_the_heroku_procfile_has_web_first_every_service_a_worker_and_a_release() -> None:
    processes = procfile(PROCFILES["heroku"])
    # Elastic Beanstalk takes the first line as its web process; Heroku routes `web` only.
    assert next(iter(processes)) == "web"
    assert processes["web"].startswith("mercato serve gateway")
    for service in SERVICES:
        if service != "gateway":
            assert processes[service].startswith(f"mercato serve {service}")
    assert processes["worker"] == "mercato worker"
    assert processes["release"] == "mercato migrate"
    assert set(processes) == {"web", "worker", "release", *SERVICES} - {"gateway"}


def test_the_local_procfile_runs_everything_but_a_release() -> None:
    processes = procfile(PROCFILES["local"])
    assert set(processes) == {*SERVICES, "worker"}  # honcho ends the run when one exits


def test_app_json_follows_herokus_schema_and_names_real_settings() -> None:
    document = app_json()
    assert set(document) <= APP_JSON_KEYS
    assert document["name"]
    assert document["description"]
    assert {"url": "heroku/python"} in document["buildpacks"]
    known = setting_names()
    for name, spec in document["env"].items():
        assert name in known, f"{name} is not a Mercato setting"
        assert set(spec) <= ENV_KEYS, name
        assert spec["description"], name
        assert "value" in spec or "generator" in spec or "required" in spec, name
    assert document["env"]["SECRET_KEY"] == {
        "description": document["env"]["SECRET_KEY"]["description"],
        "generator": "secret",
    }
    assert document["env"]["ENVIRONMENT"]["value"] == "production"
    for required in ("ALLOWED_HOSTS", "JWT_PRIVATE_KEYS"):  # production refuses without
        assert document["env"][required]["required"] is True
    assert set(document["formation"]) <= set(procfile(PROCFILES["heroku"])) - {"release"}


def test_every_addon_is_known_and_sets_the_setting_mercato_reads() -> None:
    addons = app_json()["addons"]
    assert {addon["plan"].split(":")[0] for addon in addons} == KNOWN_ADDONS
    # An add-on attached "as" NAME sets NAME_URL: DATABASE_URL, REDIS_URL, BROKER_URL.
    assert {f"{addon['as']}_URL" for addon in addons} == {
        "DATABASE_URL",
        "REDIS_URL",
        "BROKER_URL",
    }
    assert {f"{addon['as']}_URL" for addon in addons} <= setting_names()


def test_the_python_version_is_the_one_the_project_supports() -> None:
    # Heroku's Python buildpack installs with uv from uv.lock, and then needs this file.
    assert (REPO / "uv.lock").exists()
    version = (REPO / ".python-version").read_text().strip()
    assert version == "3.11"


def heroku_environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """app.json's values, what a person sets with `heroku config:set` and what the add-ons
    set, as a dyno sees them (listening on loopback here, not on every interface)."""
    document = app_json()
    values = {name: spec["value"] for name, spec in document["env"].items() if "value" in spec}
    return clean_environment(
        tmp_path,
        {
            **values,
            "HOST": "127.0.0.1",
            "SECRET_KEY": os.urandom(32).hex(),  # what the "secret" generator gives
            "ALLOWED_HOSTS": "mercato-shop.herokuapp.com,127.0.0.1",
            "JWT_PRIVATE_KEYS": KeySet([SigningKey.generate()]).to_pem(),
            "AUTH_URL": f"http://127.0.0.1:{free_port()}",
            "USERS_URL": f"http://127.0.0.1:{free_port()}",
            "PRODUCTS_URL": f"http://127.0.0.1:{free_port()}",
            "ORDERS_URL": f"http://127.0.0.1:{free_port()}",
            **extra,
        },
    )


def test_the_heroku_configuration_passes_the_production_checks(tmp_path: Path) -> None:
    env = heroku_environment(
        tmp_path,
        DATABASE_URL="postgres://user:secret@ec2-1-2-3-4.compute-1.amazonaws.com:5432/d1",
        REDIS_URL="rediss://:secret@ec2-5-6-7-8.compute-1.amazonaws.com:6380",
        BROKER_URL="amqps://user:secret@puffin.rmq2.cloudamqp.com/vhost",
    )
    run_ok([str(BIN / "mercato"), "config", "check"], cwd=tmp_path, env=env)


def heroku_url(postgres_url: str) -> str:
    """The fresh test database as Heroku's add-on names a database: ``postgres://``."""
    parts = urlsplit(postgres_url)
    return parts._replace(scheme="postgres").geturl()


@pytest.mark.deploy
def test_release_web_and_a_service_run_as_heroku_runs_them(
    tmp_path: Path, postgres_url: str
) -> None:
    processes = procfile(PROCFILES["heroku"])
    port, products_port = free_port(), free_port()
    env = heroku_environment(
        tmp_path,
        PORT=str(port),
        PRODUCTS_PORT=str(products_port),
        PRODUCTS_URL=f"http://127.0.0.1:{products_port}",
        DATABASE_URL=heroku_url(postgres_url),
    )
    run_ok(["bash", "-c", processes["release"]], cwd=tmp_path, env=env)
    with (
        running(processes["web"], env, tmp_path, tmp_path / "web.log") as web,
        running(processes["products"], env, tmp_path, tmp_path / "products.log") as products,
    ):
        health = web.wait_for(f"http://127.0.0.1:{port}/healthz")
        assert health.json()["status"] == "ok"
        ready = products.wait_for(f"http://127.0.0.1:{products_port}/readyz")
        assert ready.json()["backends"]["database"] == "postgresql"
        listed = products.wait_for(f"http://127.0.0.1:{products_port}/products")
        assert listed.json()["items"] == []
    assert web.popen.returncode == 0, web.log()
    assert products.popen.returncode == 0, products.log()
