"""Dependency failures built as the drivers raise them, for tests without a server.

``OUTAGES`` maps ``"<dependency class>:<what happened>"`` to a factory of the exception a
route sees when that happens (the dependency class spelt with ``-`` for a space);
``NOT_OUTAGES`` holds look-alikes that are bugs, not outages (they stay a 500).
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

STATEMENT = "SELECT products.id FROM products WHERE products.id = $1::VARCHAR"


def _translated(error: Exception) -> Exception:
    """The asyncpg error as SQLAlchemy's asyncpg adapter re-raises it (``raise ... from``)."""
    message = error.args[0] if error.args else str(error)
    adapted: Exception
    if isinstance(error, asyncpg.exceptions.SyntaxOrAccessError):
        adapted = AsyncAdapt_asyncpg_dbapi.ProgrammingError(message, error)
    else:
        adapted = AsyncAdapt_asyncpg_dbapi.Error(message, error)
    adapted.__cause__ = error
    return adapted


def closed_mid_query() -> Exception:
    """``pg_terminate_backend`` or a crash while a statement runs (asyncpg 0.30+)."""
    cause = asyncpg.exceptions.ConnectionDoesNotExistError(
        "connection was closed in the middle of operation"
    )
    return DBAPIError.instance(
        STATEMENT,
        ("10.1.2.3:5432",),
        _translated(cause),
        AsyncAdapt_asyncpg_dbapi.Error,
        connection_invalidated=True,
    )


def admin_shutdown() -> Exception:
    """``pg_ctl stop -m fast``: the server tells each session it is going away."""
    cause = asyncpg.exceptions.AdminShutdownError(
        "terminating connection due to administrator command"
    )
    return DBAPIError.instance(STATEMENT, (), _translated(cause), AsyncAdapt_asyncpg_dbapi.Error)


def starting_up() -> Exception:
    cause = asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
    return DBAPIError.instance(None, None, _translated(cause), AsyncAdapt_asyncpg_dbapi.Error)


def too_many_connections() -> Exception:
    cause = asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already")
    return DBAPIError.instance(None, None, _translated(cause), AsyncAdapt_asyncpg_dbapi.Error)


def _raised_in(module: str, error: BaseException) -> BaseException:
    """``error`` with a traceback whose innermost frame belongs to ``module``."""
    try:
        exec(compile("raise error", f"<{module}>", "exec"), {"__name__": module, "error": error})  # noqa: S102
    except BaseException as raised:
        return raised
    raise AssertionError("unreachable")  # pragma: no cover


def refused_by_postgres() -> BaseException:
    """asyncpg lets the socket's error through when nothing listens on the port."""
    return _raised_in(
        "asyncpg.connect_utils",
        ConnectionRefusedError(111, "Connect call failed ('10.1.2.3', 5432)"),
    )


def pool_timeout() -> Exception:
    return PoolTimeoutError(
        "QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00"
    )


def sqlite_locked() -> Exception:
    import sqlite3

    return OperationalError(STATEMENT, (), sqlite3.OperationalError("database is locked"))


def sqlalchemy_interface_error() -> Exception:
    return InterfaceError(STATEMENT, (), Exception("connection is closed"))


def redis_refused() -> Exception:
    return RedisConnectionError("Error 111 connecting to 10.1.2.3:6379. Connection refused.")


def redis_timeout() -> Exception:
    return RedisTimeoutError("Timeout reading from 10.1.2.3:6379")


def redis_loading() -> Exception:
    from redis.exceptions import BusyLoadingError

    return BusyLoadingError("Redis is loading the dataset in memory")


def redis_failing_over() -> Exception:
    from redis.exceptions import ReadOnlyError

    return ReadOnlyError("You can't write against a read only replica.")


def upstream_refused() -> BaseException:
    key = aiohttp.client_reqrep.ConnectionKey("10.1.2.3", 8003, False, True, None, None, None)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))


def broker_closed() -> BaseException:
    from aiormq.exceptions import AMQPConnectionError

    return AMQPConnectionError("connection to 10.1.2.3:5672 closed")


def outage_in_a_group() -> BaseException:
    """A ``TaskGroup`` whose task lost its connection."""
    return ExceptionGroup("unhandled errors in a TaskGroup", [closed_mid_query()])


def syntax_error() -> Exception:
    cause = asyncpg.exceptions.UndefinedColumnError('column "nope" does not exist')
    return DBAPIError.instance(STATEMENT, (), _translated(cause), AsyncAdapt_asyncpg_dbapi.Error)


def programming_error() -> Exception:
    return ProgrammingError(STATEMENT, (), Exception("syntax error at or near SELECT"))


def redis_wrong_type() -> Exception:
    from redis.exceptions import ResponseError

    return ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")


def file_missing() -> Exception:
    return FileNotFoundError(2, "No such file or directory", "/srv/secret/SELECT")


OUTAGES: dict[str, Callable[[], BaseException]] = {
    "database:closed-mid-query": closed_mid_query,
    "database:admin-shutdown": admin_shutdown,
    "database:starting-up": starting_up,
    "database:too-many-connections": too_many_connections,
    "database:refused": refused_by_postgres,
    "database:pool-timeout": pool_timeout,
    "database:sqlite-locked": sqlite_locked,
    "database:interface-error": sqlalchemy_interface_error,
    "database:in-a-task-group": outage_in_a_group,
    "cache:refused": redis_refused,
    "cache:timeout": redis_timeout,
    "cache:loading": redis_loading,
    "cache:failing-over": redis_failing_over,
    "broker:closed": broker_closed,
    "upstream-service:refused": upstream_refused,
}

NOT_OUTAGES: dict[str, Callable[[], BaseException]] = {
    "undefined-column": syntax_error,
    "programming-error": programming_error,
    "file-missing": file_missing,
    "redis-wrong-type": redis_wrong_type,
}
