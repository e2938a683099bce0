"""The GitHub Actions workflows (.github/workflows): clean under actionlint, and doing what
docs/deploy.md ("CI/CD with GitHub Actions") says: CI runs lint, types and every suite on
real servers with the names the tests read; release builds and pushes the image and deploys
main, after the tests, through a protected environment. The deploy step's overlay is
rendered here as the runner renders it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from support import servers
from support.servers import missing

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
SERVER_URLS = ("TEST_DATABASE_URL", "TEST_REDIS_URL", "TEST_BROKER_URL")


def workflow(name: str) -> dict[str, Any]:
    document: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    document["on"] = document.pop(True, document.get("on"))
    return document


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = job.get("steps", [])
    return found


def runs(job: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in steps(job))


def run_deploy_step(
    name_starts: str, cwd: Path, tmp_path: Path, **variables: str
) -> subprocess.CompletedProcess[str]:
    """Run the deploy job's step whose name starts with ``name_starts`` as the runner does
    (``bash -e``), with the job's env, ``RUNNER_TEMP`` in ``tmp_path`` and ``variables``."""
    deploy = workflow("release.yml")["jobs"]["deploy"]
    (step,) = [step for step in steps(deploy) if step.get("name", "").startswith(name_starts)]
    environment = {**os.environ, **deploy["env"], "RUNNER_TEMP": str(tmp_path), **variables}
    return subprocess.run(
        ["bash", "-e", "-c", step["run"]],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_actionlint_finds_nothing() -> None:
    beside = Path(sys.executable).parent / "actionlint"
    actionlint = str(beside) if beside.exists() else shutil.which("actionlint")
    if actionlint is None:
        missing("actionlint is not installed")
    result = subprocess.run(
        [actionlint, "-no-color"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_action_is_pinned_to_a_major_version_at_least() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        for reference in re.findall(r"uses:\s*(\S+)", path.read_text()):
            if reference.startswith("./"):
                continue
            version = reference.rpartition("@")[2]
            assert re.fullmatch(r"v\d+(\.\d+)*|[0-9a-f]{40}", version), f"{path.name}: {reference}"


def test_the_test_servers_are_the_names_the_tests_read() -> None:
    read = set(re.findall(r'os\.environ\.get\(\s*"([A-Z_]+)"', Path(servers.__file__).read_text()))
    assert read >= {*SERVER_URLS, "CI"}
    ci = workflow("ci.yml")
    assert ci["env"]["CI"] == "true"
    for name in ("test", "system"):
        job = ci["jobs"][name]
        assert set(job["services"]) == {"postgres", "redis", "rabbitmq"}, name
        for service, container in job["services"].items():
            assert "--health-cmd" in container["options"], f"{name}: {service} has no health check"
        assert set(SERVER_URLS) <= set(job["env"]), name
        # On the runner the services publish their ports; in a container job they are hosts.
        hosts = set(job["services"]) if "container" in job else {"127.0.0.1"}
        for variable in SERVER_URLS:
            assert urlsplit(job["env"][variable]).hostname in hosts, f"{name}: {variable}"


def test_ci_runs_lint_types_and_every_suite_with_a_coverage_report() -> None:
    ci = workflow("ci.yml")
    assert {"push", "pull_request", "workflow_call"} <= set(ci["on"])
    jobs = ci["jobs"]
    everything = "\n".join(runs(job) for job in jobs.values())
    for command in ("ruff check .", "ruff format --check .", "mypy", "make test"):
        assert command in everything, command
    assert "make test-fault" in everything
    assert "make test-deploy" in everything
    test = jobs["test"]
    assert "--cov=mercato" in test["env"]["PYTEST_ADDOPTS"]
    artifacts = [
        step for step in steps(test) if step.get("uses", "").startswith("actions/upload-artifact@")
    ]
    assert artifacts
    assert "coverage.xml" in artifacts[0]["with"]["path"]


def test_release_builds_the_one_image_after_the_tests_with_the_cache() -> None:
    release = workflow("release.yml")
    assert release["on"]["push"]["branches"] == ["main"]
    assert release["on"]["push"]["tags"]
    jobs = release["jobs"]
    assert jobs["test"]["uses"] == "./.github/workflows/ci.yml"
    image = jobs["image"]
    assert image["needs"] == "test"
    assert image["permissions"]["packages"] == "write"
    (build,) = [
        step
        for step in steps(image)
        if step.get("uses", "").startswith("docker/build-push-action@")
    ]
    assert build["with"]["push"] is True
    assert build["with"]["cache-from"] == "type=gha"
    assert build["with"]["cache-to"].startswith("type=gha")
    built = ROOT / build["with"]["context"] / build["with"]["file"]
    assert built.is_file(), f"release.yml builds {built}, which does not exist"


def test_deploy_needs_the_tests_runs_on_main_only_behind_the_environment() -> None:
    deploy = workflow("release.yml")["jobs"]["deploy"]
    assert set(deploy["needs"]) == {"test", "image"}
    assert deploy["if"] == "github.ref == 'refs/heads/main'"
    assert deploy["environment"]["name"] == "production"
    assert "secrets.KUBE_CONFIG" in yaml.safe_dump(deploy)
    assert deploy["env"]["OVERLAY"] == "deploy/k8s/overlays/prod"
    assert "delete job migrate" in runs(deploy)
    assert deploy["concurrency"]["cancel-in-progress"] is False


def test_the_deploy_renders_the_prod_overlay_with_the_image_just_built(tmp_path: Path) -> None:
    if shutil.which("kubectl") is None:  # the step runs the runner's kubectl kustomize
        missing("kubectl is not installed")
    checkout = tmp_path / "checkout"
    shutil.copytree(
        ROOT / "deploy" / "k8s",
        checkout / "deploy" / "k8s",
        ignore=shutil.ignore_patterns("secrets"),
    )
    digest = "sha256:" + "0123456789abcdef" * 4
    result = run_deploy_step(
        "The prod overlay", checkout, tmp_path, IMAGE="ghcr.io/acme/mercato", DIGEST=digest
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rendered = list(yaml.safe_load_all((tmp_path / "release.yaml").read_text()))
    images = {
        container["image"]
        for document in rendered
        if document and document["kind"] in {"Deployment", "Job"}
        for container in document["spec"]["template"]["spec"]["containers"]
    }
    assert images == {f"ghcr.io/acme/mercato@{digest}"}
    namespace = workflow("release.yml")["jobs"]["deploy"]["env"]["NAMESPACE"]
    assert {document["metadata"].get("namespace") for document in rendered if document} == {
        namespace,
        None,  # the Namespace itself
    }


FAKE_KUBECTL = """#!/bin/sh
echo "$*" >> "$KUBECTL_LOG"
case "$*" in
  *"get job migrate"*) printf '%s' "$JOB_STATE" ;;
esac
"""


def _deploy_against_a_fake_cluster(tmp_path: Path, job_state: str) -> tuple[int, list[str]]:
    """Run the deploy's apply step with a ``kubectl`` that records what it is asked and
    reports the migration Job in ``job_state``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(FAKE_KUBECTL)
    (bin_dir / "kubectl").chmod(0o755)
    log = tmp_path / "kubectl.log"
    result = run_deploy_step(
        "Apply",
        tmp_path,
        tmp_path,
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        KUBECTL_LOG=str(log),
        JOB_STATE=job_state,
    )
    return result.returncode, log.read_text().splitlines()


def test_the_deploy_migrates_before_it_waits_for_every_rollout(tmp_path: Path) -> None:
    code, calls = _deploy_against_a_fake_cluster(tmp_path, "Complete")
    assert code == 0, calls
    namespace = workflow("release.yml")["jobs"]["deploy"]["env"]["NAMESPACE"]
    assert calls[0] == f"-n {namespace} delete job migrate --ignore-not-found --wait=true"
    assert calls[1] == f"apply -f {tmp_path}/release.yaml"
    assert calls[2].startswith(f"-n {namespace} get job migrate")
    rollouts = [call.split()[-2] for call in calls[3:]]
    assert all("rollout status" in call for call in calls[3:])
    # Every Deployment of the prod overlay (the kinds of deploy/k8s/base).
    deployments = {
        document["metadata"]["name"]
        for path in (ROOT / "deploy" / "k8s" / "base").glob("*.yaml")
        for document in yaml.safe_load_all(path.read_text())
        if document and document.get("kind") == "Deployment"
    }
    assert {rollout.removeprefix("deployment/") for rollout in rollouts} == deployments


def test_the_deploy_stops_when_the_migration_fails(tmp_path: Path) -> None:
    code, calls = _deploy_against_a_fake_cluster(tmp_path, "Failed")
    assert code == 1
    assert not any("rollout" in call for call in calls)


def test_ci_runs_the_browser_tests_on_debians_chromium_and_keeps_the_screenshots() -> None:
    browser = workflow("ci.yml")["jobs"]["browser"]
    assert "bookworm" in browser["container"]["image"]  # Ubuntu's chromium is a snap
    commands = runs(browser)
    assert "apt-get install" in commands
    assert "chromium" in commands
    assert "make test-browser" in commands
    assert "playwright install" not in commands  # never a downloaded browser
    uploads = [
        s for s in steps(browser) if s.get("uses", "").startswith("actions/upload-artifact@")
    ]
    assert uploads[0]["with"]["path"].rstrip("/") == "tests/browser/artifacts"
    assert "make test-browser" in (ROOT / ".ci" / "run").read_text()
