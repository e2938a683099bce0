"""Reading a ``/metrics`` answer in tests: values by name and labels, parsed by
prometheus-client's own parser (not by string matching on its layout)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def metric_values(text: str, name: str, **labels: str) -> list[float]:
    """Every sample named ``name`` (``orders_total``, ``x_bucket``...) whose labels include
    ``labels``."""
    return [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of :func:`metric_values` (0 when there is none)."""
    return sum(metric_values(text, name, **labels))
