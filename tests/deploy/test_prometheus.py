"""deploy/prometheus: Debian's promtool accepts the config and the rules and passes their
unit tests; every alert has a case that fires and one that does not, a severity, its
annotations and a runbook section in docs/operations.md; the rules name only metrics the
code declares."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.deploy_container import ROOT, run, tool
from support.promql import (
    PROMETHEUS_DIR,
    RULE_FILES,
    alerts,
    declared_metrics,
    known_names,
    metric_names,
    rules,
)

RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
RUNBOOK = ROOT / "docs" / "operations.md"


@pytest.fixture(scope="module")
def promtool() -> str:
    return tool("promtool")  # Debian's prometheus package; .ci/run installs it


def test_promtool_accepts_the_config_and_the_rule_files_it_loads(promtool: str) -> None:
    result = run([promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in result.stdout + result.stderr


def test_promtool_accepts_the_rules(promtool: str) -> None:
    result = run([promtool, "check", "rules", *map(str, RULE_FILES)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rule_unit_tests_pass(promtool: str) -> None:
    assert RULE_TESTS
    result = run([promtool, "test", "rules", *map(str, RULE_TESTS)], cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


def _alert_cases() -> list[dict[str, Any]]:
    cases = []
    for path in RULE_TESTS:
        spec = yaml.safe_load(path.read_text())
        loaded = {(path.parent / name).resolve() for name in spec["rule_files"]}
        assert loaded == {rule_file.resolve() for rule_file in RULE_FILES}, path.name
        for test in spec["tests"]:
            cases.extend(test.get("alert_rule_test", []))
    return cases


def test_every_alert_has_a_case_that_fires_and_one_that_does_not() -> None:
    cases = _alert_cases()
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    names = {alert["alert"] for alert in alerts()}
    assert names - firing == set(), "no case where these fire"
    assert names - quiet == set(), "no case where these stay quiet"
    assert (firing | quiet) - names == set(), "cases of alerts that do not exist"


def _runbook_anchors() -> set[str]:
    """The anchors of docs/operations.md's headings, as GitHub makes them."""
    headings = re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), re.MULTILINE)
    return {re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-") for title in headings}


@pytest.mark.parametrize("alert", alerts(), ids=lambda alert: alert["alert"])
def test_every_alert_waits_has_a_severity_and_points_at_its_runbook(alert: dict[str, Any]) -> None:
    assert "for" in alert
    assert alert["labels"]["severity"] in {"critical", "warning"}
    annotations = alert["annotations"]
    assert annotations["summary"]
    assert annotations["description"]
    anchor = alert["alert"].lower()
    assert annotations["runbook_url"] == f"docs/operations.md#{anchor}"
    assert anchor in _runbook_anchors(), f"docs/operations.md has no section {alert['alert']}"


def test_the_rules_name_only_metrics_the_code_declares() -> None:
    known = known_names()
    for rule in rules():
        name = rule.get("alert") or rule["record"]
        used = metric_names(rule["expr"])
        assert used, name
        assert used <= known, f"{name} names {sorted(used - known)}"


def test_the_metric_names_of_an_expression_are_its_selectors() -> None:
    expr = (
        'sum by (service, le) (rate(a_total{route!~"/x|y(z)",b="c"}[5m] offset 10m))'
        " / on (service) group_left (d) rec:b:rate5m and histogram_quantile(0.99, c_bucket)"
        " > bool 1e3 or up unless vector(1)"
    )
    assert metric_names(expr) == {"a_total", "rec:b:rate5m", "c_bucket", "up"}


def test_the_code_declarations_are_found(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        'new.counter("a_total", "", [])\nCounter(\n    "b", "", [])\n'
        'new.histogram("c_seconds", "", [])\nGaugeMetricFamily("d", "")\n'
    )
    assert declared_metrics(tmp_path) == {
        "a_total",
        "b_total",
        "c_seconds_bucket",
        "c_seconds_count",
        "c_seconds_sum",
        "d",
    }
