"""The production profile for black-box tests: the settings production insists on, and
`mercato migrate`, which production never does on its own (``AUTO_MIGRATE`` is off)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from mercato.platform.security.keys import KeySet, SigningKey
from support.processes import SERVICE_PORT_SETTINGS, RunningMercato

#: ``MERCATO_E2E_PROFILE=production`` runs every `mercato up` of the e2e tier in production.
PROFILE_VARIABLE = "MERCATO_E2E_PROFILE"


def production_requested() -> bool:
    return os.environ.get(PROFILE_VARIABLE, "").lower() == "production"


def production_env() -> dict[str, str]:
    """What production refuses to start without: a random secret key, signing keys (it never
    generates them), and the host names it answers to (the tests call 127.0.0.1)."""
    return {
        "ENVIRONMENT": "production",
        "SECRET_KEY": os.urandom(32).hex(),
        "JWT_PRIVATE_KEYS": KeySet([SigningKey.generate()]).to_pem(),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
    }


def migrate(tmp_path: Path, env: Mapping[str, str]) -> None:
    """`mercato migrate` on the databases `mercato up` in ``tmp_path`` uses, with ``env``;
    raises with its output when it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "mercato", "migrate"],
        cwd=tmp_path,
        env=base_environment(tmp_path, env),
        capture_output=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace")
        raise RuntimeError(f"mercato migrate exited with {result.returncode}:\n{output[-4000:]}")


def base_environment(tmp_path: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """The environment `support.processes.mercato_up` gives its process, plus ``extra``."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "BROKER_URL", "MERCATO_CONFIG"}
    }
    environment.update(
        {
            "DATA_DIR": str(tmp_path / "var"),
            "LOG_FORMAT": "json",
            "SECRETS_DIR": str(tmp_path / "no-secrets"),
            **extra,
        }
    )
    return environment


@contextmanager
def mercato_up_live(
    tmp_path: Path, ports: Mapping[str, int], env: Mapping[str, str], *, timeout: float = 60
) -> Iterator[RunningMercato]:
    """`mercato up` that is waited for until it is *alive* (``/healthz``), not ready: for a
    start that must report itself unready."""
    log_path = tmp_path / "mercato.log"
    environment = base_environment(
        tmp_path,
        {**{SERVICE_PORT_SETTINGS[name]: str(port) for name, port in ports.items()}, **env},
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mercato", "up"],
            cwd=tmp_path,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    running = RunningMercato(process, dict(ports), tmp_path / "var", log_path)
    try:
        deadline = time.monotonic() + timeout
        while not _alive(running):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mercato up is not alive:\n{running.log()[-4000:]}")
            time.sleep(0.2)
        yield running
    finally:
        running.stop()


def _alive(running: RunningMercato) -> bool:
    try:
        return all(
            httpx.get(f"{running.url(name)}/healthz", timeout=2).status_code == 200
            for name in running.ports
        )
    except httpx.HTTPError:
        return False


#: For a test of what only development has (open docs, the demo catalogue).
development_only = pytest.mark.skipif(
    production_requested(), reason="development only: MERCATO_E2E_PROFILE=production"
)
