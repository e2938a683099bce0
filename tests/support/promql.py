"""What the Prometheus rules and the Grafana dashboard may name: the metrics the code
declares, the recording rules, and ``up``; and the metric names a PromQL expression uses."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from support.deploy_container import ROOT

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))

#: A metric declaration: MetricFactory's counter/gauge/histogram, prometheus-client's
#: classes, or a custom collector's metric family, with the name as first argument.
_DECLARATION = re.compile(
    r"(?:\.|\b)(counter|gauge|histogram|summary)(?:MetricFamily)?"
    r'\(\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"',
    re.IGNORECASE,
)
#: The series a metric of each kind exposes (a counter's name ends in _total either way).
_SERIES = {
    "counter": ("",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
}

#: PromQL words that are not metric names: operators, modifiers, aggregations' clauses.
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset", "inf", "nan"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_OFFSET = re.compile(r"\boffset\s+-?[0-9a-z]+", re.IGNORECASE)
_IDENTIFIER = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:]|\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric (and recording rule) names ``expr`` selects: what is left once strings,
    label matchers, ranges, offsets and label lists are gone, minus functions (a name
    followed by ``(``) and keywords."""
    text = _STRING.sub(" ", expr)
    for pattern in (_MATCHERS, _RANGE, _LABEL_LIST, _OFFSET):
        text = pattern.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}


def declared_metrics(source: Path = ROOT / "src") -> set[str]:
    """Every series name the code's metric declarations expose (a histogram's _bucket,
    a counter's _total, ...)."""
    series: set[str] = set()
    for path in source.rglob("*.py"):
        for kind, name in _DECLARATION.findall(path.read_text(encoding="utf-8")):
            kind = kind.lower()
            if kind == "counter":
                name = name.removesuffix("_total") + "_total"
            series.update(name + suffix for suffix in _SERIES[kind])
    return series


def rules() -> list[dict[str, Any]]:
    """Every recording and alerting rule of deploy/prometheus/rules."""
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def known_names() -> set[str]:
    """What an expression may name: the code's metrics, the recording rules and
    Prometheus's own ``up``."""
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    return declared_metrics() | recorded | {"up"}
