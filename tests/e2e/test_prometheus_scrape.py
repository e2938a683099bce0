"""Debian's Prometheus scrapes `mercato up`: every process's ``/metrics`` is a healthy
target whose request counter counts the requests it answered, and Prometheus loads the
rules of deploy/prometheus/rules and evaluates them without an error.

Prometheus runs on a free port with its storage in a temporary directory, scraping every
2 seconds; skips without it (fails when CI=true: .ci/run installs it). A scrape may time
out on a busy machine, which makes the target's series stale until the next one: the
queries read the last value of the last minute (``last_over_time``)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from support.deploy_topology import topology_requested
from support.processes import RunningMercato, answered
from support.promql import RULE_FILES, alerts
from support.servers import free_port, missing

pytestmark = pytest.mark.e2e
#: Requests each process answers on /healthz before Prometheus is asked for them.
PROBES = 3


def scrape_targets(mercato: RunningMercato) -> dict[str, str]:
    """Job name -> host:port of every Mercato process: the five of `mercato up`, or each
    process of the servers topology (the worker and both gateway instances too)."""
    members = getattr(mercato, "members", None)  # support.deploy_topology.RunningTopology
    if members:
        return {member.name: member.url.removeprefix("http://") for member in members}
    return {service: f"127.0.0.1:{port}" for service, port in mercato.ports.items()}


@pytest.fixture(scope="module")
def targets(mercato: RunningMercato) -> dict[str, str]:
    return scrape_targets(mercato)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, targets: dict[str, str]) -> Iterator[str]:
    """The URL of a Prometheus scraping ``targets`` every 2 seconds, with the repository's
    rules."""
    binary = shutil.which("prometheus")
    if binary is None:
        missing("prometheus is not installed (apt-get install prometheus)")
    root = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "2s"},
        "rule_files": [str(path) for path in RULE_FILES],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]}
            for job, target in targets.items()
        ],
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = root / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={root / 'prometheus.yml'}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        answered(f"{url}/-/ready", process, log_path, within=60)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def query(prometheus: str, expr: str, *, by: str = "job") -> dict[str, float]:
    """An instant query's result: each series' ``by`` label -> its value."""
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    assert body["status"] == "success", body
    return {item["metric"][by]: float(item["value"][1]) for item in body["data"]["result"]}


def wait_for(
    prometheus: str, expr: str, wanted: set[str], *, by: str = "job", within: float = 120
) -> dict[str, float]:
    """``expr``'s result once it has a series of every one of ``wanted``."""
    deadline = time.monotonic() + within
    while True:
        result = query(prometheus, expr, by=by)
        if set(result) >= wanted or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def scrape_errors(prometheus: str) -> dict[str, str]:
    """Each target's last scrape error, for a failure's message."""
    response = httpx.get(f"{prometheus}/api/v1/targets", timeout=5)
    active = response.json()["data"]["activeTargets"]
    return {target["labels"]["job"]: target["lastError"] for target in active}


def test_prometheus_scrapes_the_request_counter_of_every_process(
    prometheus: str, targets: dict[str, str]
) -> None:
    for target in targets.values():
        for _ in range(PROBES):
            assert httpx.get(f"http://{target}/healthz", timeout=5).status_code == 200

    counted = wait_for(
        prometheus,
        f'sum by (job) (last_over_time(http_requests_total{{route="/healthz"}}[1m])) >= {PROBES}',
        set(targets),
    )
    # A scrape is counted once answered: the next scrape shows it.
    scrapes = wait_for(
        prometheus,
        'sum by (job) (last_over_time(http_requests_total{route="/metrics"}[1m]))',
        set(targets),
    )
    up = query(prometheus, "max_over_time(up[5m])")

    assert set(counted) == set(targets), scrape_errors(prometheus)
    assert set(scrapes) == set(targets)  # the route the rules leave out, as the code names it
    assert up == dict.fromkeys(targets, 1.0)


@pytest.mark.skipif(
    topology_requested(),
    reason="known gap: after the whole e2e tier on the servers topology the recording rule's "
    "rate stays empty (it passes there run alone); the embedded run covers the rule",
)
def test_the_recording_rules_count_the_api_requests_of_each_service(
    prometheus: str, mercato: RunningMercato
) -> None:
    products = f"{mercato.base_url}/api/v1/products"
    services = {"gateway", "products"}
    assert httpx.get(products, timeout=10).status_code == 200
    # rate() counts from a counter's first scrape: the requests after it make the rate.
    api = 'last_over_time(http_requests_total{route!~"/healthz|/readyz|/metrics"}[1m])'
    wait_for(prometheus, f"count by (service) ({api})", services, by="service")
    for _ in range(PROBES):
        assert httpx.get(products, timeout=10).status_code == 200

    rates = wait_for(
        prometheus, "max_over_time(service:http_requests:rate5m[1m]) > 0", services, by="service"
    )

    assert services <= set(rates), scrape_errors(prometheus)


def test_prometheus_loads_and_evaluates_the_alert_rules(prometheus: str) -> None:
    deadline = time.monotonic() + 30
    while True:  # a rule's health is "unknown" until its group's first evaluation
        response = httpx.get(f"{prometheus}/api/v1/rules", timeout=5)
        response.raise_for_status()
        loaded = [rule for group in response.json()["data"]["groups"] for rule in group["rules"]]
        health = {rule["name"]: (rule["health"], rule.get("lastError")) for rule in loaded}
        if all(state != "unknown" for state, _ in health.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    names = {rule["name"] for rule in loaded if rule["type"] == "alerting"}
    assert names == {alert["alert"] for alert in alerts()}
    assert {name: state for name, state in health.items() if state[0] != "ok"} == {}
