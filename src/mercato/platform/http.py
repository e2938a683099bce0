"""Calls from one service to another over HTTP (aiohttp).

:class:`ServiceClients` owns one pooled ``aiohttp.ClientSession`` for a whole service; it is
opened in the lifespan (:func:`open_service_clients`) and closed there. Each upstream gets
a :class:`ServiceClient` with its own :class:`~mercato.platform.resilience.CircuitBreaker`.

Every call is a GET (a read of another service's data) with a timeout, retried a bounded
number of times with exponential backoff and full jitter when the upstream cannot be
reached, times out or answers 5xx. Unreachable upstreams, 5xx answers and timeouts count as
failures for the breaker; an open breaker refuses at once.
When the upstream cannot give an answer the caller gets :class:`UpstreamUnavailable`, a 503
problem.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import structlog
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from mercato.platform.errors import ServiceUnavailable
from mercato.platform.middleware import request_id_var
from mercato.platform.resilience import CircuitBreaker

log = structlog.stdlib.get_logger("mercato.http")

#: Where the gateway publishes every service: ``/api/v1/<service>/...`` (API.md).
PUBLIC_API_PREFIX: Final = "/api/v1"


def public_url(service_path: str) -> str:
    """The public URL of a service's own path (``/orders/42`` -> ``/api/v1/orders/42``):
    what a ``Location`` says, so that no answer names a service's own host or port."""
    return PUBLIC_API_PREFIX + service_path


class UpstreamUnavailable(ServiceUnavailable):
    """The upstream gave no usable answer (unreachable, timed out, or a 5xx)."""

    slug = "upstream-unavailable"

    def __init__(self, upstream: str) -> None:
        super().__init__(
            f"The {upstream} service is unavailable; try again shortly.",
            dependency="upstream service",
        )
        self.upstream = upstream


class _RetryableFailure(Exception):
    """One attempt failed in a way a retry may cure."""


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    """How calls to one upstream behave."""

    timeout: float = 5.0
    connect_timeout: float = 1.0
    retries: int = 2  # further attempts after the first
    backoff: float = 0.05  # first wait, seconds; doubles each retry, with jitter
    backoff_max: float = 1.0
    failure_threshold: int = 5
    reset_timeout: float = 10.0


class ServiceClient:
    """Calls to one upstream service (``name`` at ``base_url``) through a shared session."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        session: aiohttp.ClientSession,
        policy: ClientPolicy,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.policy = policy
        self.breaker = breaker or CircuitBreaker(
            name,
            failure_threshold=policy.failure_threshold,
            reset_timeout=policy.reset_timeout,
        )
        self._timeout = aiohttp.ClientTimeout(
            total=policy.timeout, sock_connect=policy.connect_timeout
        )

    async def get(self, path: str) -> UpstreamResponse:
        """GET ``path`` (retried); any answer below 500 is returned as is.

        Raises :class:`~mercato.platform.resilience.CircuitOpenError` when the breaker is
        open, :class:`UpstreamUnavailable` when no attempt got an answer below 500.
        """
        attempts = 1 + self.policy.retries
        request_id = request_id_var.get()
        send_headers = {"X-Request-ID": request_id} if request_id else {}
        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=wait_random_exponential(
                multiplier=self.policy.backoff, max=self.policy.backoff_max
            ),
            retry=retry_if_exception_type(_RetryableFailure),
            reraise=False,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(path, send_headers)
        except RetryError as exc:
            log.warning(
                "upstream unavailable",
                upstream=self.name,
                method="GET",
                path=path,
                attempts=attempts,
                error=str(exc.last_attempt.exception()),
            )
            raise UpstreamUnavailable(self.name) from None
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    async def _attempt(self, path: str, headers: Mapping[str, str]) -> UpstreamResponse:
        permit = self.breaker.acquire()  # CircuitOpenError (503) at once when open
        try:
            async with self.session.get(
                f"{self.base_url}{path}",
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                body = await response.read()
                answer = UpstreamResponse(response.status, body, dict(response.headers))
        except asyncio.CancelledError:
            permit.release()
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            permit.failure()
            raise _RetryableFailure(f"{type(exc).__name__}: {exc}") from exc
        except BaseException:
            permit.release()
            raise
        if answer.status >= 500:
            permit.failure()
            raise _RetryableFailure(f"answered {answer.status}")
        permit.success()
        return answer


class ServiceClients:
    """One pooled session and one :class:`ServiceClient` per upstream, for one process."""

    def __init__(
        self,
        upstreams: Mapping[str, str],
        *,
        policy: ClientPolicy | None = None,
        pool_size: int = 100,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
    ) -> None:
        self.upstreams = dict(upstreams)
        self.policy = policy or ClientPolicy()
        self.pool_size = pool_size
        #: The client spans (``ServiceTracing.http_trace_configs``); none when tracing is off.
        self.trace_configs = list(trace_configs)
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[str, ServiceClient] = {}

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=self.pool_size)
        self._session = aiohttp.ClientSession(
            connector=connector, raise_for_status=False, trace_configs=self.trace_configs or None
        )
        self._clients = {
            name: ServiceClient(name, url, session=self._session, policy=self.policy)
            for name, url in self.upstreams.items()
        }

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def __getitem__(self, name: str) -> ServiceClient:
        if self._session is None:
            raise RuntimeError("the service clients are not open")
        return self._clients[name]

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        return {name: client.breaker for name, client in self._clients.items()}


@asynccontextmanager
async def open_service_clients(clients: ServiceClients) -> AsyncIterator[ServiceClients]:
    await clients.open()
    try:
        yield clients
    finally:
        await clients.close()


__all__ = [
    "ClientPolicy",
    "ServiceClient",
    "ServiceClients",
    "UpstreamResponse",
    "UpstreamUnavailable",
    "open_service_clients",
    "public_url",
]
