"""deploy/grafana: the dashboard the monitoring profile provisions. Its JSON parses, every
panel queries the provisioned Prometheus data source with expressions that name only
metrics the code declares (or the recording rules), and docker-compose.yml mounts the
provisioning where its files say."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from support.deploy_container import ROOT
from support.promql import known_names, metric_names

GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "mercato.json"
#: What the panels show, row by row (issue 15's list).
ROWS = [
    "Requests",
    "Errors",
    "Latency",
    "Orders funnel",
    "Outbox and events",
    "Dependencies",
    "Logins and rate limits",
]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


@pytest.fixture(scope="module")
def grafana_service() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service: dict[str, Any] = compose["services"]["grafana"]
    return service


def _provisioning(kind: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(
        next((GRAFANA / "provisioning" / kind).glob("*.yml")).read_text()
    )
    return loaded


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def test_the_dashboard_has_its_rows_and_a_unique_id_per_panel(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "mercato"
    rows = [panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"]
    assert rows == ROWS
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in _panels(dashboard):
        assert panel["targets"], panel["title"]


def test_every_panel_queries_the_provisioned_prometheus(dashboard: dict[str, Any]) -> None:
    (source,) = _provisioning("datasources")["datasources"]
    assert source["type"] == "prometheus"
    expected = {"type": "prometheus", "uid": source["uid"]}
    for panel in _panels(dashboard):
        assert panel["datasource"] == expected, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected, panel["title"]


def test_every_expression_names_only_metrics_the_code_declares(dashboard: dict[str, Any]) -> None:
    known = known_names()
    for panel in _panels(dashboard):
        for target in panel["targets"]:
            used = metric_names(target["expr"])
            assert used, panel["title"]
            assert used <= known, f"{panel['title']}: {sorted(used - known)}"


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> what is mounted there (``source`` or ``source:ro``)."""
    mounts = {}
    for volume in service["volumes"]:
        source, target, *mode = volume.split(":")
        mounts[target] = ":".join([source, *mode])
    return mounts


def test_compose_provisions_grafana_read_only_from_deploy_grafana(
    grafana_service: dict[str, Any],
) -> None:
    mounts = _mounts(grafana_service)
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning:ro"
    (provider,) = _provisioning("dashboards")["providers"]
    assert mounts[provider["options"]["path"]] == "./deploy/grafana/dashboards:ro"
    assert mounts["/var/lib/grafana"] == "grafana-data"  # Grafana's own state, a volume
    for source in mounts.values():
        if source.startswith("./"):
            assert (ROOT / source.removesuffix(":ro")).is_dir(), source


def test_compose_runs_a_pinned_grafana_beside_prometheus(grafana_service: dict[str, Any]) -> None:
    image, _, tag = grafana_service["image"].partition(":")
    assert image == "grafana/grafana"
    assert tag[:1].isdigit(), "pin a version"
    assert grafana_service["profiles"] == ["monitoring"]
    assert grafana_service["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    assert grafana_service["ports"] == ["127.0.0.1:3000:3000"]  # this host only
    (source,) = _provisioning("datasources")["datasources"]
    assert source["url"] == "http://prometheus:9090"


def test_grafana_reads_its_admin_password_from_the_env_file(
    grafana_service: dict[str, Any],
) -> None:
    assert grafana_service["env_file"] == "deploy/compose.env"
    example = (ROOT / "deploy" / "compose.env.example").read_text()
    assert "\nGF_SECURITY_ADMIN_PASSWORD=\n" in example
