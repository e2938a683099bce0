"""The route table and its upstreams: service name -> one or more instances.

Every service gets one pooled, kept-alive aiohttp session (see
docs/adr/0003-gateway-http-client.md). Its instances are used round-robin; each instance has
its own :class:`~mercato.platform.resilience.CircuitBreaker`, which is the passive health
check: an instance that keeps failing is skipped until its breaker lets a trial through, and
when every instance of a service is open the gateway answers 503 at once.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from mercato.platform.resilience import CircuitBreaker, CircuitOpenError, Permit
from mercato.settings import BACKEND_SERVICES, Settings


def route_table(settings: Settings) -> dict[str, list[str]]:
    """``{service: [base URL, ...]}``: ``GATEWAY_ROUTES`` when set, else the four services'
    ``*_URL`` (or ports), where a comma-separated ``*_URL`` names several instances."""
    if settings.gateway_routes:
        table = dict(settings.gateway_routes)
    else:
        table = {service: settings.service_urls(service) for service in BACKEND_SERVICES}
    return {
        service: [url.rstrip("/") for url in urls if url.strip()] for service, urls in table.items()
    }


class Instance:
    """One base URL of a service, with the breaker that decides whether it gets calls."""

    __slots__ = ("base", "breaker", "url")

    def __init__(self, url: str, breaker: CircuitBreaker) -> None:
        self.url = url
        self.base = URL(url)
        self.breaker = breaker


class Upstream:
    """A service behind the gateway: its instances and its pooled HTTP session."""

    def __init__(
        self,
        name: str,
        urls: Iterable[str],
        *,
        pool_size: int,
        timeout: aiohttp.ClientTimeout,
        failure_threshold: int,
        reset_timeout: float,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
    ) -> None:
        self.name = name
        self.instances = [
            Instance(
                url,
                CircuitBreaker(
                    f"{name}@{urlsplit(url).netloc}",
                    failure_threshold=failure_threshold,
                    reset_timeout=reset_timeout,
                ),
            )
            for url in urls
        ]
        if not self.instances:
            raise ValueError(f"upstream {name!r} has no URL")
        self._next = itertools.count()
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0,
                limit_per_host=pool_size,
                keepalive_timeout=60,
                ttl_dns_cache=300,
                enable_cleanup_closed=False,
            ),
            timeout=timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
            trace_configs=list(trace_configs) or None,  # client spans, when tracing is on
        )

    def choose(self, exclude: Instance | None = None) -> tuple[Instance, Permit]:
        """The next instance (round-robin) whose breaker admits a call, and its permit.

        Raises :class:`CircuitOpenError` (503) when every instance refuses; its
        ``Retry-After`` is the shortest wait among them.
        """
        count = len(self.instances)
        start = next(self._next)
        waits: list[float] = []
        for offset in range(count):
            instance = self.instances[(start + offset) % count]
            if instance is exclude and count > 1:
                continue
            try:
                return instance, instance.breaker.acquire()
            except CircuitOpenError as refused:
                waits.append(refused.retry_after)
        raise CircuitOpenError(self.name, min(waits) if waits else 1.0)

    async def close(self) -> None:
        await self.session.close()


def build_upstreams(
    table: Mapping[str, list[str]],
    settings: Settings,
    *,
    trace_configs: Sequence[aiohttp.TraceConfig] = (),
) -> dict[str, Upstream]:
    timeout = aiohttp.ClientTimeout(
        total=None,
        sock_connect=settings.upstream_connect_timeout,
        sock_read=settings.upstream_timeout,
    )
    return {
        name: Upstream(
            name,
            urls,
            pool_size=settings.upstream_pool_size,
            timeout=timeout,
            failure_threshold=settings.upstream_fail_threshold,
            reset_timeout=settings.upstream_fail_timeout,
            trace_configs=trace_configs,
        )
        for name, urls in table.items()
    }
