"""Metrics (Prometheus) and health: what every service answers on ``/metrics``,
``/healthz`` and ``/readyz``.

``/metrics`` answers only clients in ``METRICS_ALLOWED_NETWORKS`` (default loopback and the
private ranges, where scrapers live); anyone else gets the same 404 as an unknown path. The
client is the socket peer, or the address a trusted proxy forwarded for (never an
``X-Forwarded-For`` from anyone else), so a public request relayed by a reverse proxy on a
private address is told apart once that proxy is in ``TRUSTED_PROXIES``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.exceptions import HTTPException
from starlette.types import Scope

from mercato.platform.net import TrustedProxies
from mercato.platform.resilience import CircuitBreaker

#: A readiness check: returns normally when the dependency answers, raises otherwise.
Probe = Callable[[], Awaitable[Any]]


class ProbeFailed(Exception):
    """A readiness check that failed for a reason safe to show on ``/readyz`` (its message;
    no host, port or credential). Any other exception shows only its type."""


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: How a gauge's values from several gunicorn workers merge on ``/metrics`` (prometheus-client
#: multiprocess mode): ``livemax`` for a figure every worker samples from the same source (a
#: table, a queue) or a state where the worst worker counts; ``livesum`` for a share each
#: worker holds. The ``live`` modes drop the values of workers that died.
MultiprocessMode = Literal["livemax", "livesum", "livemin", "liveall", "livemostrecent"]


class MetricFactory:
    """Declares metrics in one registry, each with its name, help text and label names;
    every latency histogram has the same :data:`LATENCY_BUCKETS`, every gauge says how the
    workers' values merge under gunicorn."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def counter(self, name: str, documentation: str, labels: Sequence[str]) -> Counter:
        return Counter(name, documentation, labels, registry=self.registry)

    def gauge(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        *,
        multiprocess_mode: MultiprocessMode,
    ) -> Gauge:
        return Gauge(
            name,
            documentation,
            labels,
            registry=self.registry,
            multiprocess_mode=multiprocess_mode,
        )

    def histogram(self, name: str, documentation: str, labels: Sequence[str]) -> Histogram:
        """A latency histogram, in seconds."""
        return Histogram(
            name, documentation, labels, registry=self.registry, buckets=LATENCY_BUCKETS
        )


class HttpMetrics:
    """Request count and latency per route template, in one service's registry."""

    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        new = MetricFactory(registry)
        self.requests = new.counter(
            "http_requests_total",
            "HTTP requests answered, by route template and status.",
            ["service", "method", "route", "status"],
        )
        self.latency = new.histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["service", "method", "route"],
        )
        self.service = service
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        if method not in KNOWN_METHODS:
            method = "OTHER"  # a client must not be able to mint label values
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:  # label lookups are costly; each combination is resolved once
            children = (
                self.requests.labels(self.service, method, route, str(status)),
                self.latency.labels(self.service, method, route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


def rate_limit_refusals(registry: CollectorRegistry, service: str) -> Callable[[str], None]:
    """A :class:`~mercato.platform.security.ratelimit.RateLimiter` ``on_refused`` that counts
    ``rate_limit_refusals_total{service,limit}``: every 429 a limit answered."""
    refusals = MetricFactory(registry).counter(
        "rate_limit_refusals_total",
        "Requests refused with 429 by a rate limit, by limit name.",
        ["service", "limit"],
    )
    return lambda limit: refusals.labels(service, limit).inc()


class BreakerStates:
    """``upstream_circuit_state{service,upstream,address}`` (0 closed, 1 half-open, 2 open),
    the one gauge of every caller's circuit breakers (one per upstream, or per instance of
    an upstream where a caller balances over several). Set on every transition, and again by
    :meth:`refresh` before a scrape, so that an open breaker whose timeout has passed shows
    half-open even if no call came since. Under gunicorn the worst worker's state shows."""

    def __init__(self, registry: CollectorRegistry, service: str) -> None:
        self.service = service
        self._gauge = MetricFactory(registry).gauge(
            "upstream_circuit_state",
            "Circuit breaker of each upstream (and instance address): "
            "0 closed, 1 half-open, 2 open.",
            ["service", "upstream", "address"],
            multiprocess_mode="livemax",
        )
        self._breakers: list[CircuitBreaker] = []

    def track(self, upstream: str, address: str, breaker: CircuitBreaker) -> None:
        child = self._gauge.labels(self.service, upstream, address)
        child.set(breaker.state_code)
        breaker.add_listener(lambda changed, _old, _new: child.set(changed.state_code))
        self._breakers.append(breaker)

    def refresh(self) -> None:
        for breaker in self._breakers:
            _ = breaker.state  # an open breaker past its timeout turns half-open (listener)


def metrics_payload(registry: CollectorRegistry) -> bytes:
    """The text exposition of ``registry``; under gunicorn, of every worker process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        merged = CollectorRegistry()
        MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
    return generate_latest(registry)


async def run_probes(probes: Mapping[str, Probe], *, limit: float = 2.0) -> dict[str, str]:
    """Run every probe concurrently, each within ``limit`` seconds; each answers "ok" or
    why it failed (no internals)."""

    async def one(probe: Probe) -> str:
        try:
            await asyncio.wait_for(probe(), limit)
        except TimeoutError:
            return "timeout"
        except ProbeFailed as exc:
            return str(exc)
        except Exception as exc:  # a probe reports any failure; it never raises
            return f"unavailable ({type(exc).__name__})"
        return "ok"

    results = await asyncio.gather(*(one(probe) for probe in probes.values()))
    return dict(zip(probes, results, strict=True))


def readiness_response(
    service: str, checks: Mapping[str, str], backends: Mapping[str, str]
) -> JSONResponse:
    ready = all(result == "ok" for result in checks.values())
    body = {
        "status": "ready" if ready else "unavailable",
        "service": service,
        "checks": checks,
        "backends": backends,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


class MetricsAccess:
    """Who may read ``/metrics``: clients whose address is in ``networks``, the address
    resolved through ``proxies`` (the socket peer unless that is a trusted proxy)."""

    def __init__(self, networks: Iterable[str], proxies: TrustedProxies) -> None:
        self.networks = tuple(ipaddress.ip_network(item, strict=False) for item in networks)
        self.proxies = proxies

    def allows(self, scope: Scope) -> bool:
        try:
            address = ipaddress.ip_address(self.proxies.client_address(scope))
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


def health_router(service: str, registry: CollectorRegistry, access: MetricsAccess) -> APIRouter:
    """``/healthz``, ``/readyz`` and ``/metrics``; readiness runs ``app.state.probes``,
    metrics answer only whom ``access`` allows (404 to anyone else), after running
    ``app.state.before_scrape`` (gauges read at scrape time)."""
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness: the process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @router.get(
        "/readyz",
        summary="Readiness: this service's database, cache and broker answer",
        responses={503: {"description": "a dependency is not answering"}},
    )
    async def readyz(request: Request) -> JSONResponse:
        state = request.app.state
        return readiness_response(service, await run_probes(state.probes), state.backends)

    @router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        if not access.allows(request.scope):
            raise HTTPException(404)  # the same answer as a path that does not exist
        for refresh in getattr(request.app.state, "before_scrape", ()):
            refresh()
        return Response(metrics_payload(registry), media_type=CONTENT_TYPE_LATEST)

    return router
