"""The Dockerfile: hadolint, what the image is (read from the file), what .dockerignore lets
into the build, and, with no Docker engine here, the same runtime built and run without
one: a fresh virtualenv installed by the Dockerfile's own uv commands, the image's command
run as the image's user with the image's environment."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mercato.platform.settings_sources import field_names, is_secret_name
from mercato.settings import SERVICES, Settings
from support.deploy_container import (
    ROOT,
    Dockerfile,
    Stage,
    read_dockerfile,
    run,
    run_command,
    start,
    stop,
    tool,
)
from support.processes import SERVICE_PORT_SETTINGS, answered, log_tail
from support.servers import free_port, missing

#: What the package needs to build: all the build stage may copy, and all .dockerignore
#: may let through.
PACKAGE = ("pyproject.toml", "uv.lock", "README.md", "src")
#: Variables of the image that are not Mercato settings (Python's, prometheus-client's).
RUNTIME_VARIABLES = {
    "PATH",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PROMETHEUS_MULTIPROC_DIR",
}


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return read_dockerfile()


def test_hadolint_finds_nothing() -> None:
    result = run([tool("hadolint"), str(ROOT / "Dockerfile")], timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_the_slim_python_with_a_virtualenv_built_apart(dockerfile: Dockerfile) -> None:
    build, runtime = dockerfile.stage("build"), dockerfile.runtime
    assert dockerfile.base_of(runtime) == "python:3.11-slim"
    # The same Python in both stages: the virtualenv's interpreter links to the base's.
    assert dockerfile.base_of(build) == dockerfile.base_of(runtime)
    syncs = [run_command(line) for line in build.all("RUN") if "uv sync" in line]
    assert syncs, "the build stage installs nothing with uv"
    for command in syncs:
        words = shlex.split(command)
        assert {"--frozen", "--no-dev"} <= set(words), command  # the lock as it is, no tests
        assert not {"--all-groups", "--group", "--dev"} & set(words), command
    for line in build.all("COPY"):
        if not line.startswith("--from="):  # the checkout's files (the uv binary aside)
            assert set(shlex.split(line)[:-1]) <= set(PACKAGE), line
    # The runtime stage takes only the virtualenv: no source, no .env, no key.
    for line in runtime.all("COPY"):
        assert line.startswith("--from=build "), line
        assert line.split()[1:] == ["/opt/mercato", "/opt/mercato"], line
    assert not runtime.all("ADD")
    assert not build.all("ADD")


def test_the_image_runs_mercato_as_an_unprivileged_user(dockerfile: Dockerfile) -> None:
    runtime = dockerfile.runtime
    assert runtime.exec_form("ENTRYPOINT") == ["mercato"]
    assert runtime.exec_form("CMD") == ["serve", "gateway"]
    user, _, group = runtime.last("USER").partition(":")
    # Numeric, so that Kubernetes' runAsNonRoot can check it; not root.
    assert user.isdigit()
    assert int(user) != 0
    assert group.isdigit()
    assert int(group) != 0
    healthcheck = runtime.last("HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert "urllib.request" in healthcheck


def test_the_image_environment_holds_no_secret_and_only_known_names(
    dockerfile: Dockerfile,
) -> None:
    settings = {name.upper() for name in field_names(Settings)}
    for stage in dockerfile.stages:
        for name in stage.env():
            assert not is_secret_name(name), f"{name} is baked into the image"
            if stage is dockerfile.runtime:
                assert name in settings | RUNTIME_VARIABLES, f"{name} is not a setting"
    env = dockerfile.runtime.env()
    # The two paths the processes write are the volume and a directory the user owns.
    assert dockerfile.runtime.exec_form("VOLUME") == [env["DATA_DIR"]]
    made = " ".join(dockerfile.runtime.all("RUN"))
    assert re.search(rf"install -d -o mercato -g mercato .*{env['DATA_DIR']}", made)
    assert env["PROMETHEUS_MULTIPROC_DIR"] in made
    assert env["HOST"] == "0.0.0.0"  # reachable from outside the container


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the build context: the last pattern matching
    it or one of its parent directories decides (``!`` lets it back in)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        regex = re.escape(body.strip("/")).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\?", "[^/]").replace(r"\[", "[").replace(r"\]", "]")
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            ignored = not negate
    return ignored


def _dockerignore() -> list[str]:
    return [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_dockerignore_lets_only_the_package_into_the_build() -> None:
    patterns = _dockerignore()
    listed = run(["git", "ls-files"], cwd=ROOT)
    assert listed.returncode == 0, listed.stderr
    tracked = listed.stdout.split()
    let_in = {path for path in tracked if not _ignored(path, patterns)}
    assert let_in, "nothing reaches the build"
    assert all(path in PACKAGE or path.startswith("src/") for path in let_in), sorted(let_in)
    assert {"pyproject.toml", "uv.lock", "README.md", "src/mercato/cli.py"} <= let_in
    for local in (
        ".env",
        "deploy/compose.env",
        "src/.env",
        "var/auth.db",
        "var/jwt-keys.pem",
        ".venv/bin/python",
        ".git/config",
        "src/mercato/__pycache__/cli.cpython-311.pyc",
        "tests/conftest.py",
    ):
        assert _ignored(local, patterns), f"{local} would reach the build"


# --- the runtime, built and run without Docker ---------------------------------------------


def _python_for(version: str) -> str:
    """A Python ``version`` interpreter that any user may run (the image's user has no
    access to root's home, where pyenv puts its own)."""
    candidates = [
        os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
        f"/usr/bin/python{version}",
        f"/usr/local/bin/python{version}",
    ]
    usable = [
        candidate
        for candidate in candidates
        if Path(candidate).exists()
        and Path(candidate).name.startswith(f"python{version}")
        and all(parent.stat().st_mode & 0o001 for parent in Path(candidate).parents)
    ]
    if not usable:
        missing(f"no Python {version} that a non-root user can run ({', '.join(candidates)})")
    return usable[0]


@pytest.fixture
def image_root() -> Iterator[Path]:
    """A directory standing for the image's filesystem, which any user may traverse
    (pytest's own tmp_path is its owner's alone)."""
    root = Path(tempfile.mkdtemp(prefix="mercato-image-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _rooted(value: str, root: Path) -> str:
    """An absolute path of the image, under ``root``."""
    return str(root / value.lstrip("/")) if value.startswith("/") else value


def _build(dockerfile: Dockerfile, root: Path) -> Path:
    """The build stage without Docker, instruction by instruction under ``root``: its
    ENV, its WORKDIR, each COPY of the build context (the checkout as .dockerignore lets
    it through) when the stage copies it, and its own uv commands; the virtualenv lands at
    the stage's path under ``root``."""
    build = dockerfile.stage("build")
    version = re.search(r"python:(\d+\.\d+)", dockerfile.base_of(build))
    assert version, dockerfile.base_of(build)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT"} and not key.startswith("UV_")
    }
    env.update(build.env())
    venv = Path(_rooted(env["UV_PROJECT_ENVIRONMENT"], root))
    env["UV_PROJECT_ENVIRONMENT"] = str(venv)
    made = run([_python_for(version[1]), "-m", "venv", "--without-pip", str(venv)], timeout=60)
    assert made.returncode == 0, made.stderr
    patterns = _dockerignore()
    uv = tool("uv")
    workdir = root
    for kind, rest in build.instructions:
        if kind == "WORKDIR":
            workdir = Path(_rooted(rest, root))
            workdir.mkdir(parents=True, exist_ok=True)
        elif kind == "COPY" and not rest.startswith("--from="):
            *sources, destination = shlex.split(rest)
            for source in sources:
                _copy_context(source, workdir / destination, patterns)
        elif kind == "RUN":
            command = shlex.split(run_command(rest))
            assert command[0] == "uv", f"the build stage runs {command[0]}; this test cannot"
            result = run([uv, *command[1:]], cwd=workdir, env=env, timeout=300)
            assert result.returncode == 0, result.stderr[-4000:]
    return venv


def _copy_context(source: str, destination: Path, patterns: list[str]) -> None:
    """``COPY source destination`` from the build context: a file into the destination
    directory, a directory's contents into it, leaving out what .dockerignore does."""
    origin = ROOT / source
    assert not _ignored(source, patterns), f"COPY {source}: .dockerignore leaves it out"
    if origin.is_file():
        destination.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, destination / origin.name)
        return

    def left_out(directory: str, names: list[str]) -> set[str]:
        relative = Path(directory).relative_to(ROOT)
        return {name for name in names if _ignored(str(relative / name), patterns)}

    shutil.copytree(origin, destination, ignore=left_out, dirs_exist_ok=True)


@pytest.mark.deploy
@pytest.mark.timeout(300)
def test_the_image_command_serves_as_the_image_user(
    dockerfile: Dockerfile, image_root: Path
) -> None:
    runtime = dockerfile.runtime
    venv = _build(dockerfile, image_root)
    uid, _, gid = runtime.last("USER").partition(":")
    image_env = runtime.env()
    data_dir = Path(_rooted(image_env["DATA_DIR"], image_root))
    metrics_dir = Path(_rooted(image_env["PROMETHEUS_MULTIPROC_DIR"], image_root))
    for directory in (data_dir, metrics_dir):  # the RUN install -d of the runtime stage
        directory.mkdir(parents=True)
        if os.geteuid() == 0:
            os.chown(directory, int(uid), int(gid))
    # Only what the image sets (docker run starts from it, not from this shell's variables).
    env = {
        "LANG": "C.UTF-8",  # the python image's
        **image_env,
        "PATH": image_env["PATH"]
        .replace("/opt/mercato/bin", str(venv / "bin"))
        .replace("$PATH", "/usr/local/bin:/usr/bin:/bin"),
        "DATA_DIR": str(data_dir),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "HOME": str(data_dir),
        "HOST": "127.0.0.1",  # the image listens on every interface; a test on loopback only
        "SECRETS_DIR": str(image_root / "run" / "secrets"),
        "LOG_FORMAT": "json",
    }
    ports = {service: free_port() for service in SERVICES}
    env.update({SERVICE_PORT_SETTINGS[name]: str(port) for name, port in ports.items()})
    as_image_user = (
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
        if os.geteuid() == 0
        else []  # already unprivileged: run as this user
    )
    if as_image_user and shutil.which("setpriv") is None:
        missing("setpriv (util-linux) is not installed")
    entrypoint = runtime.exec_form("ENTRYPOINT")
    command = [str(venv / "bin" / entrypoint[0]), *entrypoint[1:]]
    image_cmd = runtime.exec_form("CMD")  # serve gateway; each service the same way
    processes = {}
    try:
        for service in SERVICES:
            args = image_cmd if service == "gateway" else ["serve", service]
            processes[service] = start(
                [*as_image_user, *command, *args],
                cwd=data_dir,  # the WORKDIR
                env=env,
                log=image_root / f"{service}.log",
            )
        gateway = f"http://127.0.0.1:{ports['gateway']}"
        answered(f"{gateway}/readyz", processes["gateway"], image_root / "gateway.log", within=120)
        for service, port in ports.items():
            assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200, service
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
            assert ready.status_code == 200, (service, ready.text)
            if as_image_user:
                status = Path(f"/proc/{processes[service].pid}/status").read_text()
                assert re.search(rf"^Uid:\s+{uid}\s", status, re.M), status
        # The image's HEALTHCHECK, as Docker runs it in the gateway's container.
        result = run([*as_image_user, *_healthcheck(runtime)], env=env, timeout=30)
        assert result.returncode == 0, result.stderr
    finally:
        codes = {service: stop(process) for service, process in processes.items()}
    logs = {service: log_tail(image_root / f"{service}.log") for service in processes}
    # Stopped cleanly: uvicorn re-raises the SIGTERM it handled once it has shut down.
    assert set(codes.values()) <= {0, -signal.SIGTERM}, (codes, logs)
    assert all("Application shutdown complete" in log for log in logs.values()), logs
    # Each service took a metrics directory of its own under the image's.
    assert {path.name for path in metrics_dir.iterdir()} == set(SERVICES)


def _healthcheck(runtime: Stage) -> list[str]:
    """The exec-form command of the image's HEALTHCHECK (after its options and ``CMD``)."""
    command: list[str] = json.loads(runtime.last("HEALTHCHECK").split("CMD", 1)[1])
    return command
