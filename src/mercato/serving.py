"""Running the services: all of them in one process (`mercato up`), or one per process
under uvicorn or gunicorn (`mercato serve`)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import shutil
import signal
import socket
import sys
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import uvicorn
from fastapi import FastAPI

from mercato.platform.db import Database
from mercato.platform.edge import guarded_protocol
from mercato.platform.migrations import MigrationHistory, upgrade
from mercato.platform.net import connecting_addresses
from mercato.platform.shutdown import bounded, time_left, wait_ended
from mercato.platform.telemetry import Tracing
from mercato.settings import BACKEND_SERVICES, SERVICES, ServiceName, Settings

if TYPE_CHECKING:  # imported where used: messaging imports prometheus_client (see below)
    from mercato.messaging import Broker

log = structlog.stdlib.get_logger("mercato.serving")

AppFactory = Callable[[Settings], FastAPI]


def app_module(service: ServiceName) -> Any:
    return importlib.import_module(f"mercato.{service}.app")


def consumer_groups() -> dict[str, tuple[str, ...]]:
    """Every consumer group the services declare (``CONSUMER_GROUPS`` of each ``app.py``):
    each service's broker connection declares them all before it publishes anything."""
    from mercato.messaging import join_groups

    return join_groups(getattr(app_module(s), "CONSUMER_GROUPS", {}) for s in BACKEND_SERVICES)


def build_app(
    service: ServiceName,
    settings: Settings,
    *,
    broker: Broker | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    """The app of ``service``, wired to the deployment's consumer groups; ``broker`` and
    ``tracing`` are those the services of this process share (memory broker, one span
    exporter), else each has its own."""
    from mercato.messaging import SharedMessaging

    create_app = app_module(service).create_app
    if service == "gateway":  # it has no messaging
        gateway: FastAPI = create_app(settings, tracing=tracing)
        return gateway
    shared = SharedMessaging(consumer_groups(), broker)
    app: FastAPI = create_app(settings, shared=shared, tracing=tracing)
    return app


def app_factory(service: ServiceName) -> AppFactory:
    """Build the app of ``service`` from settings alone (one service per process)."""

    def factory(settings: Settings) -> FastAPI:
        return build_app(service, settings)

    return factory


def migrations_of(service: ServiceName) -> list[MigrationHistory]:
    return list(getattr(app_module(service), "MIGRATIONS", []))


async def migrate(settings: Settings, services: Sequence[ServiceName]) -> None:
    """Apply every migration history of ``services`` to their databases.

    A PostgreSQL server that refuses (no such database, a wrong password) raises
    :class:`~mercato.platform.startup.DependencyRefused` naming the setting."""
    from sqlalchemy.exc import DBAPIError

    from mercato.platform.startup import database_dependency, refused

    for service in services:
        histories = migrations_of(service)
        if not histories:
            continue
        database = Database(settings.database_url_for(service), schema=service)
        try:
            await upgrade(database, histories)
        except DBAPIError as exc:
            dependency = database_dependency(settings, service)
            if dependency is None:
                raise
            raise refused(dependency, exc) from None
        finally:
            await database.dispose()
        log.info("migrated", service=service)


def edge_options(settings: Settings) -> dict[str, Any]:
    """The uvicorn options that hold a process against hostile clients, under uvicorn alone
    and in gunicorn's workers alike: a request head above ``MAX_HEADER_BYTES`` is refused
    (431) as it arrives, a request not received within ``REQUEST_READ_TIMEOUT`` is cut off
    (408), an idle connection closes after ``KEEP_ALIVE_TIMEOUT``, and past
    ``MAX_CONNECTIONS`` requests get 503."""
    return {
        "http": guarded_protocol(
            max_head=settings.max_header_bytes,
            read_timeout=settings.request_read_timeout,
            max_connections=settings.max_connections,
            always_hsts=settings.is_production,
        ),
        "timeout_keep_alive": settings.keep_alive_timeout,
    }


def uvicorn_config(
    app: FastAPI | str, settings: Settings, port: int, **extra: Any
) -> uvicorn.Config:
    """How every Mercato process runs uvicorn (see :func:`edge_options`)."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=port,
        log_config=None,  # our logging pipeline handles uvicorn's loggers
        access_log=False,  # our middleware writes one access line per request
        server_header=False,
        proxy_headers=False,  # client addresses are resolved by TRUSTED_PROXIES, not here
        timeout_graceful_shutdown=int(settings.graceful_timeout),
        lifespan="on",
        **edge_options(settings),
        **extra,
    )


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the process that runs several, and
    names its ``service`` on uvicorn's own lines (they would say the process's, "mercato")."""

    def __init__(self, config: uvicorn.Config, service: ServiceName | None = None) -> None:
        super().__init__(config)
        self.service = service

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        if self.service is None:
            await super().serve(sockets)
            return
        with structlog.contextvars.bound_contextvars(service=self.service):
            await super().serve(sockets)


#: The least time a server is given to finish its requests in flight once told to stop.
REQUESTS_AT_LEAST = 0.1
#: After GRACEFUL_TIMEOUT, how long the servers still running are given once told to exit
#: at once, and then once cancelled (then they are abandoned).
FORCE_EXIT_GRACE = 0.5
#: How long the tasks still running when the main coroutine returned, the async generators
#: and the default executor get, together, to end once cancelled.
LEFTOVER_GRACE = 0.5


async def run_all(settings: Settings, *, on_ready: Callable[[], None] | None = None) -> int:
    """Serve every service and the gateway in this process until SIGINT or SIGTERM.

    Returns the exit code: 0 after a signal, 1 when a server could not start. Once the
    signal came, it returns within GRACEFUL_TIMEOUT and one second more, whatever
    the requests, consumers and dependencies in flight do: the gateway stops taking
    requests first, then the services drain theirs and stop; what still runs when the
    time is up is told to exit at once, then cancelled, then abandoned with a warning.
    """
    # The services believe X-Forwarded-For from this process's own gateway (no one else).
    gateway = connecting_addresses(settings.service_url(name) for name in BACKEND_SERVICES)
    settings = settings.model_copy(
        update={"internal_proxies": [*settings.internal_proxies, *gateway]}
    )
    from mercato.messaging import in_process_broker

    broker = in_process_broker(settings)  # memory: one for the five, or they would not meet
    tracing = Tracing.from_settings(settings)  # one exporter; a service.name each
    servers = {
        service: EmbeddedServer(
            uvicorn_config(
                build_app(service, settings, broker=broker, tracing=tracing),
                settings,
                settings.service_port(service),
            ),
            service,
        )
        for service in SERVICES
    }
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def serve(server: EmbeddedServer) -> None:
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits when it cannot bind its port
            pass
        finally:
            stop.set()

    tasks = {
        name: asyncio.create_task(serve(server), name=f"serve-{name}")
        for name, server in servers.items()
    }
    try:
        # uvicorn exposes only a `started` flag, so start-up is polled.
        while not stop.is_set() and not all(server.started for server in servers.values()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        failed = [name for name, server in servers.items() if not server.started]
        if not failed and on_ready is not None:
            on_ready()
        await stop.wait()
        await _stop_servers(servers, tasks, within=settings.graceful_timeout)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if tracing.enabled:
            await bounded(
                asyncio.to_thread(tracing.shutdown), within=1.0, what="sending the last spans"
            )
    if failed:
        log.error("could not start", services=failed)
        return 1
    return 0


async def _stop_servers(
    servers: Mapping[ServiceName, EmbeddedServer],
    tasks: Mapping[ServiceName, asyncio.Task[None]],
    *,
    within: float,
) -> None:
    """Stop every server within ``within`` seconds: requests drain in the first half (the
    gateway first: its requests in flight need the services), the lifespans (consumers,
    relays, connections) shut down in the rest; what still runs then is forced."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    requests_until = loop.time() + within / 2
    gateway = servers["gateway"]
    _tell_to_exit(gateway, requests_within=time_left(requests_until))
    await asyncio.wait({tasks["gateway"]}, timeout=time_left(requests_until))
    for server in servers.values():
        if server is not gateway:
            _tell_to_exit(server, requests_within=time_left(requests_until))
    _, running = await asyncio.wait(set(tasks.values()), timeout=time_left(deadline))
    if not running:
        return
    names = sorted(name for name, task in tasks.items() if task in running)
    log.warning("still stopping after GRACEFUL_TIMEOUT; forcing", services=names, within=within)
    for name in names:
        servers[name].force_exit = True
    await wait_ended(
        running,
        within=FORCE_EXIT_GRACE,
        cancel_grace=FORCE_EXIT_GRACE,
        what=f"stopping {', '.join(names)}",
    )


def _tell_to_exit(server: EmbeddedServer, *, requests_within: float) -> None:
    """Make ``server`` stop taking connections, and cancel its requests still in flight
    after ``requests_within`` seconds (uvicorn's graceful timeout, read as it shuts down)."""
    seconds = max(requests_within, REQUESTS_AT_LEAST)
    server.config.timeout_graceful_shutdown = seconds  # type: ignore[assignment] # any number
    server.should_exit = True


def run_event_loop(main: Any) -> Any:
    """Run a coroutine to completion on uvloop when it is installed (it is, with
    uvicorn[standard]), then close the loop. Unlike ``asyncio.run``, leaving never hangs:
    tasks still running are cancelled and given LEFTOVER_GRACE seconds, then abandoned."""
    loop: asyncio.AbstractEventLoop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            loop.run_until_complete(_end_leftovers(LEFTOVER_GRACE))
        finally:
            loop.close()


async def _end_leftovers(grace: float) -> None:
    """Cancel the tasks still running, then close the async generators and the default
    executor, all within ``grace`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    current = asyncio.current_task()
    leftovers = {task for task in asyncio.all_tasks() if task is not current}
    for task in leftovers:
        task.cancel()
    if leftovers:
        _, running = await asyncio.wait(leftovers, timeout=time_left(deadline))
        if running:
            log.warning(
                "tasks still running at exit; abandoned",
                tasks=sorted(task.get_name() for task in running),
            )
    for step, what in (
        (loop.shutdown_asyncgens, "closing async generators"),
        (loop.shutdown_default_executor, "stopping the default executor"),
    ):
        await bounded(step(), within=time_left(deadline), what=what, cancel_grace=0.1)


def _share_metrics_between_workers(service: ServiceName, default_base: Path) -> None:
    """Give the service's worker processes one prometheus-client multiprocess directory of
    its own, emptied at start, so that /metrics answers for the whole service, not for the
    worker that took the request. A ``PROMETHEUS_MULTIPROC_DIR`` set by the user is the
    parent: several services started with the same environment (a Procfile) each get their
    own directory under it instead of summing each other's counters.
    Must run before prometheus_client is imported."""
    user_base = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    base = Path(user_base) if user_base else default_base
    directory = base / service
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def serve_one(settings: Settings, service: ServiceName, *, workers: int) -> None:
    """Serve one service: uvicorn for one worker, gunicorn with uvicorn workers for more."""
    port = settings.service_port(service)
    if workers <= 1:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            _share_metrics_between_workers(service, settings.data_dir / "metrics")
        server = uvicorn.Server(uvicorn_config(app_factory(service)(settings), settings, port))
        server.run()
        if not server.started:
            sys.exit(1)
        return
    _share_metrics_between_workers(service, settings.data_dir / "metrics")
    from mercato.gunicorn_app import GunicornApplication

    if settings.auto_migrate:
        # Once, before forking: workers migrating side by side would race on the schema.
        run_event_loop(migrate(settings, [service]))
        settings = settings.model_copy(update={"auto_migrate": False})
    GunicornApplication(settings, service, workers=workers).run()
