"""Waiting at start-up for the servers a process needs: PostgreSQL, Redis, the broker.

A process that starts before its database (a container beside it, a server rebooting)
waits up to ``STARTUP_TIMEOUT`` seconds, saying which one it waits for by the setting that
names it and its host and port (never its credentials), and then gives up with one line,
before anything is served or announced.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from mercato.platform.settings import SharedSettings

#: The port a scheme means when its URL names none.
DEFAULT_PORTS: Final = {
    "postgresql": 5432,
    "redis": 6379,
    "rediss": 6379,
    "amqp": 5672,
    "amqps": 5671,
    "kafka": 9092,
}

#: Between two connection attempts to a server that did not answer, seconds.
RETRY_INTERVAL: Final = 0.5
#: One connection attempt, seconds (a firewall that drops packets must not eat the budget).
CONNECT_TIMEOUT: Final = 2.0


@dataclass(frozen=True, slots=True)
class Dependency:
    """A server a process needs: the setting that names it, its host and port."""

    setting: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.setting} ({host}:{self.port})"


class DependencyUnavailable(Exception):
    """A dependency did not answer within the start-up timeout."""

    def __init__(self, dependency: Dependency, timeout: float) -> None:
        super().__init__(f"{dependency} did not answer within {timeout:g} s (STARTUP_TIMEOUT)")
        self.dependency = dependency


class DependencyRefused(Exception):
    """A dependency answered, but refused what was asked of it (no such database, a wrong
    password...)."""

    def __init__(self, dependency: Dependency, reason: str) -> None:
        super().__init__(f"{dependency} refused: {reason}")
        self.dependency = dependency


def database_dependency(settings: SharedSettings, service: str) -> Dependency | None:
    """The PostgreSQL server of ``service``, named by the setting that gives it."""
    own = getattr(settings, f"{service}_database_url", None)
    setting = f"{service.upper()}_DATABASE_URL" if own else "DATABASE_URL"
    url = own or settings.database_url
    if not url or not url.startswith("postgresql"):
        return None
    servers = _servers(setting, url, "postgresql")
    return servers[0] if servers else None


def refused(dependency: Dependency, error: BaseException) -> DependencyRefused:
    """The one line for a driver's error: the server's own message, never a URL."""
    reason = getattr(error, "orig", None) or error
    return DependencyRefused(dependency, " ".join(str(reason).split()) or type(reason).__name__)


def dependencies(settings: SharedSettings, backends: Sequence[str]) -> list[Dependency]:
    """The TCP servers a process needs under ``settings``, each once, in the order they
    are needed: the databases of ``backends`` (its services that keep data and exchange
    events), Redis, the broker (when there are ``backends``). Embedded backends need none."""
    found: list[Dependency] = []
    for service in backends:
        if database := database_dependency(settings, service):
            found.append(database)
    if settings.redis_url:
        found += _servers("REDIS_URL", settings.redis_url)
    uses_events = bool(backends)
    if uses_events and settings.broker_url and not settings.broker_url.startswith("memory:"):
        found += _servers("BROKER_URL", settings.broker_url)
    unique: dict[tuple[str, int], Dependency] = {}
    for dependency in found:
        unique.setdefault((dependency.host, dependency.port), dependency)
    return list(unique.values())


def _servers(setting: str, url: str, scheme: str | None = None) -> list[Dependency]:
    parts = urlsplit(url)
    scheme = scheme or parts.scheme
    if scheme == "kafka":  # kafka://host:port[,host:port]
        netloc = parts.netloc.rpartition("@")[2]
        return [
            _dependency(setting, f"//{server}", scheme) for server in netloc.split(",") if server
        ]
    if scheme not in DEFAULT_PORTS or not parts.hostname:  # unix sockets: nothing to wait for
        return []
    return [_dependency(setting, url, scheme)]


def _dependency(setting: str, url: str, scheme: str) -> Dependency:
    parts = urlsplit(url)
    return Dependency(setting, parts.hostname or "", parts.port or DEFAULT_PORTS[scheme])


async def answers(dependency: Dependency) -> bool:
    """Whether ``dependency`` accepts a TCP connection now."""
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            _, writer = await asyncio.open_connection(dependency.host, dependency.port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            await writer.wait_closed()
    except (OSError, TimeoutError):
        pass
    return True


async def wait_for(
    needed: Sequence[Dependency],
    seconds: float,
    *,
    on_wait: Callable[[Dependency], None] | None = None,
) -> None:
    """Return once every one of ``needed`` answers; raise :class:`DependencyUnavailable`
    for the first that does not within ``seconds`` (shared by all of them).
    ``on_wait`` is called once for each dependency that did not answer at first."""
    deadline = time.monotonic() + seconds
    for dependency in needed:
        announced = False
        while not await answers(dependency):
            if not announced and on_wait is not None:
                on_wait(dependency)
            announced = True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DependencyUnavailable(dependency, seconds)
            await asyncio.sleep(min(RETRY_INTERVAL, remaining))
