"""Is a failure the work's fault, or a dependency's? :func:`is_transient` tells.

A *transient* failure says that something the work needs is unavailable for now: the
database (connection refused or lost mid-query, pool exhausted, locked, shutting down), the
cache, the broker, an upstream service answering 503. Trying the same work again later is
the cure, and it must not count against the work (a consumer pauses instead of
dead-lettering). Anything else (a constraint violated, a domain rule refused, a bug) is a
failure of the work itself.
"""

from __future__ import annotations

import errno
import functools

import sqlalchemy.exc

from mercato.messaging.brokers.base import BrokerUnavailable
from mercato.platform.errors import AppError

#: Local OS errors that say nothing about a dependency being away.
_LOCAL_OS_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
_NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ETIMEDOUT,
        errno.EPIPE,
        errno.EAGAIN,
    }
)


@functools.cache
def _client_errors() -> tuple[type[BaseException], ...]:
    """The outage errors of the clients installed: asyncpg, redis, aiohttp."""
    found: list[type[BaseException]] = []
    try:
        import asyncpg.exceptions as pg  # type: ignore[import-untyped]

        found += [
            pg.PostgresConnectionError,  # connection failure, connection does not exist
            pg.OperatorInterventionError,  # admin/crash shutdown, cannot connect now, cancel
            pg.InsufficientResourcesError,  # too many connections, disk full, out of memory
            pg.TransactionRollbackError,  # serialization failure, deadlock: try again
            pg.LockNotAvailableError,
        ]
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        pass
    try:
        import redis.exceptions as redis_errors

        found += [redis_errors.ConnectionError, redis_errors.TimeoutError]
    except ImportError:  # pragma: no cover - redis is a dependency
        pass
    try:
        import aiohttp

        found += [aiohttp.ClientConnectionError, aiohttp.ServerTimeoutError]
    except ImportError:  # pragma: no cover - aiohttp is a dependency
        pass
    return tuple(found)


def _transient_itself(exc: BaseException) -> bool:
    if isinstance(exc, BrokerUnavailable):
        return True
    if isinstance(exc, AppError):  # an upstream or a dependency answered 503
        return exc.status == 503
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError)
    if isinstance(exc, sqlalchemy.exc.TimeoutError | sqlalchemy.exc.DisconnectionError):
        return True  # no connection from the pool in time; a connection lost
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if isinstance(exc, OSError):
        if isinstance(exc, _LOCAL_OS_ERRORS):
            return False
        # asyncio's "Multiple exceptions: [Errno 111] Connect call failed" has no errno.
        return exc.errno is None or exc.errno in _NETWORK_ERRNOS
    if _is_closed_asyncpg_interface(exc):
        return True
    return isinstance(exc, _client_errors())


def _is_closed_asyncpg_interface(exc: BaseException) -> bool:
    """asyncpg's ``InterfaceError: connection is closed`` (not its misuse errors)."""
    try:
        import asyncpg.exceptions as pg
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, pg.InterfaceError) and "closed" in str(exc)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it wraps or was raised from, says that a dependency is
    unavailable for now (see the module's docstring) rather than that the work is wrong."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if _transient_itself(current):
            return True
        orig = getattr(current, "orig", None)  # SQLAlchemy's DBAPIError wraps the driver's
        pending += [orig if isinstance(orig, BaseException) else None, current.__cause__]
    return False
