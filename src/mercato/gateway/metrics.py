"""The gateway's own metrics, next to the per-route request metrics every service has.

Labelled children are looked up once and kept, so the hot path pays one dict lookup and one
increment per metric.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram

from mercato.platform.observability import BreakerStates, MetricFactory
from mercato.platform.resilience import CircuitBreaker


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        new = MetricFactory(registry)
        self._requests = new.counter(
            "gateway_upstream_requests_total",
            "Answers received from upstream services, by upstream and status.",
            ["upstream", "status"],
        )
        self._latency = new.histogram(
            "gateway_upstream_duration_seconds",
            "Time from sending a request upstream to its response head, by upstream.",
            ["upstream"],
        )
        self._errors = new.counter(
            "gateway_upstream_errors_total",
            "Upstream calls that failed: timeout, connect, disconnect, circuit_open.",
            ["upstream", "kind"],
        )
        self._refused = new.counter(
            "gateway_refused_total",
            "Requests the gateway answered itself, by problem (unauthorized, rate-limited...).",
            ["reason"],
        )
        self._breakers = BreakerStates(registry, "gateway")
        self._request_children: dict[tuple[str, int], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}

    def observe(self, upstream: str, status: int, seconds: float) -> None:
        key = (upstream, status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self._requests.labels(upstream, str(status))
        counter.inc()
        histogram = self._latency_children.get(upstream)
        if histogram is None:
            histogram = self._latency_children[upstream] = self._latency.labels(upstream)
        histogram.observe(seconds)

    def error(self, upstream: str, kind: str) -> None:
        self._errors.labels(upstream, kind).inc()

    def refused(self, reason: str) -> None:
        self._refused.labels(reason).inc()

    def track(self, breakers: Iterable[CircuitBreaker]) -> None:
        """Publish the state of ``breakers`` (named ``upstream@host:port``) as
        ``upstream_circuit_state{service="gateway",upstream,address}``."""
        for breaker in breakers:
            upstream, _, address = breaker.name.partition("@")
            self._breakers.track(upstream, address, breaker)

    def refresh_breakers(self) -> None:
        """Before a scrape: breakers past their reset timeout show half-open."""
        self._breakers.refresh()
