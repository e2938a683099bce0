"""The Kubernetes manifests (deploy/k8s): each overlay builds offline with ``kubectl
kustomize``, validates against the Kubernetes schemas (``kubernetes-validate --strict``), and
says what the processes need: probes, a restricted pod, resources, ports that are the
settings' defaults, NetworkPolicies that let only the callers in, and a configuration that
production's start-up accepts for every Deployment and the migration Job."""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from mercato.platform.security.keys import SigningKey
from mercato.platform.settings_sources import env_name
from mercato.settings import BACKEND_SERVICES, SERVICES, ServiceName, Settings, load_settings
from support.servers import missing

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
#: The oldest Kubernetes the manifests are for (the preStop sleep action is on by default
#: from 1.30), and the newest schema kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30.0", None)
IMAGE = "ghcr.io/example/mercato"
#: Who may connect to each process, by component (or namespace, for what runs outside ours):
#: the gateway from the ingress controller, the services from the gateway, auth also from
#: every service that verifies tokens (its JWKS), products also from orders (it prices an
#: order), and everyone from Prometheus.
ALLOWED_CALLERS = {
    "gateway": {"namespace ingress-nginx"},
    "auth": {"gateway", "users", "products", "orders"},
    "users": {"gateway"},
    "products": {"gateway", "orders"},
    "orders": {"gateway"},
    "worker": set(),
}
PROMETHEUS = "namespace monitoring"
WRITABLE = ("DATA_DIR", "PROMETHEUS_MULTIPROC_DIR")
SIGNING_KEY = SigningKey.generate().to_pem()
SECRET_KEY = "s" * 48


# --- building -------------------------------------------------------------------------------


def tool(name: str) -> str:
    """The path of ``name``: the virtualenv's first, then PATH; skip (fail under CI) if absent."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        missing(f"{name} is not installed")
    return found


def run(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/k8s with the dev overlay's uncommitted secret files written, as a
    developer writes them from secrets.example.env."""
    copy = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("secrets"))
    secrets = copy / "overlays" / "dev" / "secrets"
    secrets.mkdir()
    example = (copy / "overlays" / "dev" / "secrets.example.env").read_text()
    (secrets / "mercato.env").write_text(
        example.replace("SECRET_KEY=\n", f"SECRET_KEY={SECRET_KEY}\n")
    )
    (secrets / "jwt-keys.pem").write_text(SIGNING_KEY)
    return copy


@pytest.fixture(scope="module")
def built(checkout: Path) -> dict[str, str]:
    """Each overlay, as ``kubectl kustomize`` renders it (offline: no cluster is asked)."""
    kubectl = tool("kubectl")
    return {name: run(kubectl, "kustomize", str(checkout / "overlays" / name)) for name in OVERLAYS}


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, built: dict[str, str]) -> Manifests:
    return Manifests(request.param, list(yaml.safe_load_all(built[request.param])))


class Manifests:
    """One rendered overlay, by kind and name."""

    def __init__(self, name: str, documents: list[dict[str, Any]]) -> None:
        self.name = name
        self.documents = [doc for doc in documents if doc]

    def of(self, kind: str) -> dict[str, dict[str, Any]]:
        return {doc["metadata"]["name"]: doc for doc in self.documents if doc["kind"] == kind}

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = self.of(kind)
        assert name in found, f"{self.name}: no {kind} {name} (only {sorted(found)})"
        return found[name]

    def workloads(self) -> dict[str, dict[str, Any]]:
        """Every Deployment, and the migration Job."""
        return {**self.of("Deployment"), **self.of("Job")}

    def config(self) -> dict[str, str]:
        (config,) = self.of("ConfigMap").values()
        data: dict[str, str] = config["data"]
        return data


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return dict(only)


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def component(workload: dict[str, Any]) -> str:
    return pod_labels(workload)["app.kubernetes.io/component"]


# --- the validators -------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS, ids=lambda v: v or "latest")
def test_every_overlay_validates_against_the_kubernetes_schemas(
    built: dict[str, str], tmp_path: Path, version: str | None
) -> None:
    validate = tool("kubernetes-validate")
    files = [K8S / "overlays" / "prod" / "secret.example.yaml"]
    for name, text in built.items():
        files.append(tmp_path / f"{name}.yaml")
        files[-1].write_text(text)
    flags = ["--strict", "--quiet", *(["--kubernetes-version", version] if version else [])]
    run(validate, *flags, *map(str, files))


def test_the_base_alone_builds(checkout: Path) -> None:
    run(tool("kubectl"), "kustomize", str(checkout / "base"))


def test_the_dev_secret_files_are_never_committed() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for name in ("mercato.env", "jwt-keys.pem"):
        path = f"deploy/k8s/overlays/dev/secrets/{name}"
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, check=False)
        assert ignored.returncode == 0, f"{path} is not gitignored"


# --- what every process needs ---------------------------------------------------------------


def test_every_process_runs_the_one_image_with_its_command(overlay: Manifests) -> None:
    workloads = overlay.workloads()
    assert set(map(component, workloads.values())) == {*SERVICES, "worker", "migrate"}
    for name, workload in workloads.items():
        box = container(workload)
        repository, _, tag = box["image"].rpartition(":")
        assert repository == IMAGE, f"{name}: {box['image']}"
        assert tag, f"{name}: the overlay sets no tag"
        expected = {
            "worker": ["worker", "--port", "8005"],
            "migrate": ["migrate"],
        }.get(component(workload), ["serve", component(workload)])
        assert box["args"] == expected, name
        assert "command" not in box, f"{name}: the image's entry point is `mercato`"


def test_every_deployment_has_the_three_probes_on_its_own_port(overlay: Manifests) -> None:
    for name, deployment in overlay.of("Deployment").items():
        box = container(deployment)
        ports = {port["name"]: port["containerPort"] for port in box["ports"]}
        assert set(ports) == {"http"}, name
        for probe, path in (
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
        ):
            assert box[probe]["httpGet"] == {"path": path, "port": "http"}, f"{name} {probe}"
        startup = box["startupProbe"]
        # Start-up may wait STARTUP_TIMEOUT (30 s) for its servers before it listens.
        assert startup["failureThreshold"] * startup["periodSeconds"] >= 60, name
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > (
            Settings.model_fields["graceful_timeout"].default
            + box["lifecycle"]["preStop"]["sleep"]["seconds"]
        ), name


def test_every_pod_is_restricted_with_writable_scratch_only(overlay: Manifests) -> None:
    config = overlay.config()
    for name, workload in overlay.workloads().items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": 10001,  # the Dockerfile's user `mercato`
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        }, name
        assert pod["automountServiceAccountToken"] is False, name
        box = container(workload)
        assert box["securityContext"] == {
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        }, name
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        assert all("emptyDir" in volume for volume in volumes.values()), name
        mounted = {mount["mountPath"]: mount["name"] for mount in box["volumeMounts"]}
        assert set(mounted.values()) <= set(volumes), name
        for path in [*(config[setting] for setting in WRITABLE), "/tmp"]:
            assert path in mounted, f"{name}: nothing writable at {path}"
        for kind in ("requests", "limits"):
            assert set(box["resources"][kind]) == {"cpu", "memory"}, f"{name} {kind}"


def test_ports_and_urls_are_the_settings_defaults(overlay: Manifests) -> None:
    config = overlay.config()
    defaults = Settings.model_construct()
    for service in SERVICES:
        port = defaults.service_port(service)
        box = container(overlay.one("Deployment", service))
        assert box["ports"][0]["containerPort"] == port, service
        (service_port,) = overlay.one("Service", service)["spec"]["ports"]
        assert service_port == {"name": "http", "port": port, "targetPort": "http"}, service
        assert overlay.one("Service", service)["spec"]["selector"] == {
            key: value
            for key, value in pod_labels(overlay.one("Deployment", service)).items()
            if key != "app.kubernetes.io/part-of"
        }
        if service != "gateway":
            assert config[f"{service.upper()}_URL"] == f"http://{service}:{port}"
    assert "worker" not in overlay.of("Service"), "nothing calls the worker"


def test_the_gateway_and_the_services_autoscale_and_survive_drains(overlay: Manifests) -> None:
    autoscalers, budgets = overlay.of("HorizontalPodAutoscaler"), overlay.of("PodDisruptionBudget")
    for service in SERVICES:
        deployment = overlay.one("Deployment", service)
        assert "replicas" not in deployment["spec"], f"{service}: the autoscaler owns replicas"
        hpa = autoscalers[service]
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": service,
        }
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        selector = budgets[service]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels(deployment).items(), service
        assert budgets[service]["spec"]["maxUnavailable"] == 1
    if overlay.name == "prod":
        assert all(hpa["spec"]["minReplicas"] >= 2 for hpa in autoscalers.values())


def test_the_ingress_reaches_the_gateway_only_for_the_allowed_hosts(overlay: Manifests) -> None:
    (ingress,) = overlay.of("Ingress").values()
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    hosts = [rule["host"] for rule in ingress["spec"]["rules"]]
    assert hosts == overlay.config()["ALLOWED_HOSTS"].split(",")
    backends = [
        path["backend"]["service"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert backends == [{"name": "gateway", "port": {"name": "http"}}] * len(hosts)
    if overlay.name == "prod":
        (tls,) = ingress["spec"]["tls"]
        assert tls["hosts"] == hosts
        assert tls["secretName"]


# --- who may connect to whom ----------------------------------------------------------------


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are understood here"
    return dict(selector.get("matchLabels", {})).items() <= labels.items()


def _peer(peer: dict[str, Any], workloads: dict[str, dict[str, Any]]) -> set[str]:
    """The components (ours) or ``namespace N`` (another's) one ``from`` entry admits."""
    if "namespaceSelector" in peer:
        names = peer["namespaceSelector"]["matchLabels"]
        assert set(names) == {"kubernetes.io/metadata.name"}, "a peer namespace is named"
        assert "podSelector" in peer, "only the named pods of another namespace"
        return {f"namespace {names['kubernetes.io/metadata.name']}"}
    assert set(peer) == {"podSelector"}, peer
    found = {
        component(workload)
        for workload in workloads.values()
        if _selects(peer["podSelector"], pod_labels(workload))
    }
    assert found, f"{peer} admits no pod"
    return found


def test_default_deny_then_only_the_callers_of_each_process(overlay: Manifests) -> None:
    policies = overlay.of("NetworkPolicy")
    deny = policies["default-deny-ingress"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    workloads = overlay.workloads()
    for workload in workloads.values():
        name = component(workload)
        if name == "migrate":
            continue
        port = container(workload)["ports"][0]["name"]
        callers: set[str] = set()
        for policy in policies.values():
            spec = policy["spec"]
            if not _selects(spec["podSelector"], pod_labels(workload)):
                continue
            assert spec["policyTypes"] == ["Ingress"], policy["metadata"]["name"]
            for rule in spec.get("ingress", []):
                assert [entry["port"] for entry in rule["ports"]] == [port]
                for peer in rule["from"]:
                    callers |= _peer(peer, workloads)
        assert callers == ALLOWED_CALLERS[name] | {PROMETHEUS}, name


# --- the configuration production's start-up checks ----------------------------------------


def _example_secret() -> dict[str, str]:
    text = (K8S / "overlays" / "prod" / "secret.example.yaml").read_text()
    data: dict[str, str] = yaml.safe_load(text)["stringData"]
    # The example's placeholders are not a key and a random secret; the test's are.
    return {**data, "SECRET_KEY": SECRET_KEY, "JWT_PRIVATE_KEYS": SIGNING_KEY}


def _secret_values(overlay: Manifests) -> tuple[str, dict[str, str]]:
    """The Secret the pods read and its values: the dev overlay's generated one, or the
    operator's (the prod overlay has none), as secret.example.yaml describes it."""
    generated = overlay.of("Secret")
    if not generated:
        return "mercato", _example_secret()
    ((name, secret),) = generated.items()
    return name, {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def environment_of(overlay: Manifests, workload: dict[str, Any]) -> dict[str, str]:
    """The environment the container starts with: its ConfigMap, then its own variables,
    the Secret's values in place of its references."""
    (config_map,) = overlay.of("ConfigMap")
    secret_name, secrets = _secret_values(overlay)
    box = container(workload)
    environment: dict[str, str] = {}
    for source in box.get("envFrom", []):
        assert source == {"configMapRef": {"name": config_map}}, source
        environment.update(overlay.config())
    for variable in box.get("env", []):
        if "value" in variable:
            environment[variable["name"]] = variable["value"]
            continue
        reference = variable["valueFrom"]["secretKeyRef"]
        assert reference["name"] == secret_name, variable
        if reference["key"] in secrets:
            environment[variable["name"]] = secrets[reference["key"]]
        else:
            assert reference.get("optional"), f"the Secret has no {reference['key']}"
    return environment


def checked_services(workload: dict[str, Any]) -> list[ServiceName]:
    """The services whose configuration the process checks at start-up (cli.py)."""
    args = container(workload)["args"]
    if args[0] == "serve":
        assert args[1] in get_args(ServiceName)
        return [args[1]]
    return {"worker": ["orders"], "migrate": list(BACKEND_SERVICES)}[args[0]]


@pytest.fixture
def process_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings from the variables a test sets only: none of the machine's, no .env, no
    config file, no secrets directory."""
    for name, field in Settings.model_fields.items():
        for variable in {name, env_name(name, field)}:
            monkeypatch.delenv(variable.upper(), raising=False)
    monkeypatch.delenv("MERCATO_CONFIG", raising=False)
    monkeypatch.setenv("SECRETS_DIR", str(tmp_path / "no-secrets"))
    monkeypatch.chdir(tmp_path)


@pytest.mark.usefixtures("process_environment")
def test_production_starts_every_process_on_the_manifests_configuration(
    overlay: Manifests, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, workload in overlay.workloads().items():
        environment = environment_of(overlay, workload)
        with monkeypatch.context() as scoped:
            for variable, value in environment.items():
                scoped.setenv(variable, value)
            settings = load_settings(env_file=None)
        assert settings.environment == "production", name
        assert settings.problems(checked_services(workload)) == [], name
        assert settings.host == "0.0.0.0", f"{name} must listen on the pod's address"
        assert settings.token_keys_url() == "http://auth:8004/auth/.well-known/jwks.json"
        assert not settings.notifications_in_process, "the worker Deployment sends the mail"
        assert str(settings.data_dir) == environment["DATA_DIR"]


def test_each_process_gets_only_the_secrets_it_needs(overlay: Manifests) -> None:
    expected = {
        "gateway": {"SECRET_KEY", "REDIS_URL"},
        "auth": {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "BROKER_URL", "JWT_PRIVATE_KEYS"},
        "worker": {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "BROKER_URL", "SMTP_URL"},
        "migrate": {"SECRET_KEY", "DATABASE_URL", "JWT_PRIVATE_KEYS"},
    }
    for workload in overlay.workloads().values():
        box = container(workload)
        assert not any("secretRef" in source for source in box.get("envFrom", []))
        names = {variable["name"] for variable in box.get("env", []) if "valueFrom" in variable}
        wanted = expected.get(
            component(workload), {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "BROKER_URL"}
        )
        assert names == wanted, component(workload)


def test_the_secret_examples_name_every_key_the_pods_read(overlay: Manifests) -> None:
    read = {
        variable["valueFrom"]["secretKeyRef"]["key"]
        for workload in overlay.workloads().values()
        for variable in container(workload).get("env", [])
        if "valueFrom" in variable
    }
    assert set(_example_secret()) == read
    dev_example = (K8S / "overlays" / "dev" / "secrets.example.env").read_text()
    named = {
        line.lstrip("# ").split("=", 1)[0]
        for line in dev_example.splitlines()
        if "=" in line and line.lstrip("# ").split("=", 1)[0].isupper()
    }
    assert named | {"JWT_PRIVATE_KEYS"} == read  # the key is a file of its own there
