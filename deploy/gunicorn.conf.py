"""gunicorn's configuration for one Mercato service, for running gunicorn's own command:

    gunicorn -c deploy/gunicorn.conf.py                      # the gateway on $PORT (8000)
    PORT=8003 WEB_CONCURRENCY=4 \
        gunicorn -c deploy/gunicorn.conf.py 'mercato.gunicorn_app:asgi_app("products")'

How it relates to `mercato serve SERVICE --workers N`: that command runs the same gunicorn
(``mercato.gunicorn_app.GunicornApplication``) with the app built the same way (``asgi_app``
here), the same worker class, logger class and ``child_exit`` hook, its options set in code
from the settings, and is what the Procfile,
the image and the other deployment files run. This file is for where gunicorn itself is
the command (a platform or a process manager that starts ``gunicorn``), and sets gunicorn's
own knobs that ``mercato serve`` leaves at gunicorn's defaults: the worker timeout, and
restarting each worker after ``max_requests`` (with jitter). Before it forks, the
``on_starting`` hook below does what ``mercato serve`` does first, with its own code:
validate the settings (exit 2, one line per problem), configure the structured logging,
wait for the database, Redis and the broker, give the service's workers one Prometheus
multiprocess directory, and apply the migrations once (when AUTO_MIGRATE applies).

Only what gunicorn needs is read here, from the environment: ``HOST`` and ``PORT`` (bind),
``WEB_CONCURRENCY`` (workers). The app reads its own settings (``DATABASE_URL``...) from
every source ``mercato serve`` reads (environment, ``.env``, config file, secrets).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

# --- the socket and the workers ---------------------------------------------------------

#: ``$PORT`` is the one port of this process (gunicorn's and Heroku's convention); the
#: interface is the ``HOST`` setting's (127.0.0.1 unless set; the image sets 0.0.0.0).
bind = [f"{os.environ.get('HOST') or '127.0.0.1'}:{os.environ.get('PORT') or '8000'}"]

#: Most workers a CPU count gives, however many cores the machine has: each one holds its
#: own pools (database, Redis, HTTP clients) and its own in-memory caches.
MAX_WORKERS = 8


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may run on
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


#: One uvicorn worker per core (an asyncio worker keeps a core busy on its own, unlike
#: the sync workers the 2 x cores + 1 advice is for), at least 2 so that a worker that dies
#: or recycles leaves one serving, at most MAX_WORKERS. ``WEB_CONCURRENCY`` wins.
workers = int(os.environ.get("WEB_CONCURRENCY") or min(max(_cpus(), 2), MAX_WORKERS))

#: uvicorn in each worker, leaving logging and access lines to Mercato. ``on_starting``
#: swaps in the settings' variant (request head size, read timeout, connection limit), as
#: ``mercato serve`` does, and the log level (LOG_LEVEL); this is the class gunicorn checks
#: the configuration with.
worker_class = "mercato.gunicorn_app.MercatoUvicornWorker"

#: The gateway, unless the command line names another service's app the same way.
wsgi_app = 'mercato.gunicorn_app:asgi_app("gateway")'
proc_name = "mercato"

# --- timeouts ---------------------------------------------------------------------------

#: A worker whose event loop has not reported in for this long is killed and replaced.
timeout = 30
#: After SIGTERM, workers get this long to finish. Longer than GRACEFUL_TIMEOUT (10 s by
#: default), within which the app drains its requests and closes its connections itself.
graceful_timeout = 30
#: Seconds an idle keep-alive connection stays open (KEEP_ALIVE_TIMEOUT's default): longer
#: than a reverse proxy's idle upstream connections would let gunicorn close them under it.
keepalive = 5

#: Each worker is replaced after about this many requests, the jitter spreading the restarts
#: so that the workers never recycle at once (a slow leak cannot grow for ever).
max_requests = 1000
max_requests_jitter = 100

#: The workers' heartbeat files in memory: on a container's overlay filesystem (or a
#: read-only root with /tmp on disk) a write to /tmp can stall long enough to look dead.
_SHM = "/dev/shm"  # noqa: S108 - the per-container shared-memory mount, not a shared /tmp
worker_tmp_dir = _SHM if os.path.isdir(_SHM) else None

#: gunicorn 23+ opens a control socket at one path per user (~/.gunicorn/gunicorn.ctl):
#: several masters on one machine would take it from each other. Mercato needs none.
control_socket_disable = True

# --- logs -------------------------------------------------------------------------------

#: gunicorn's own lines go through Mercato's structured pipeline (JSON in production),
#: configured by on_starting. There is no gunicorn access log: Mercato's middleware writes
#: one structured access line per request (the ACCESS_LOG setting), with its request id.
logger_class = "mercato.gunicorn_app.StructuredGunicornLogger"
accesslog = None
errorlog = "-"

# --- hooks ------------------------------------------------------------------------------

_APP = re.compile(r"""^mercato\.gunicorn_app:asgi_app\(["'](?P<service>[a-z]+)["']\)$""")


def _service(server: Any) -> Any:
    """The service of the app gunicorn runs (``mercato.gunicorn_app:asgi_app("<service>")``:
    built as ``mercato serve`` builds it, with the consumer groups of the whole system)."""
    from mercato.settings import SERVICES

    # The command line's app, else wsgi_app (gunicorn's own order).
    app = getattr(server.app, "app_uri", None) or server.cfg.wsgi_app
    found = _APP.match(str(app or ""))
    if found is None or found["service"] not in SERVICES:
        sys.exit(
            f'gunicorn.conf.py: the app must be mercato.gunicorn_app:asgi_app("SERVICE")'
            f" with a SERVICE among {', '.join(SERVICES)}, not {app!r}"
        )
    return found["service"]


def _as_exit(step: Any, *args: Any) -> Any:
    """Run one of ``mercato serve``'s start-up steps; its refusal (it has printed why)
    becomes the master's exit code."""
    import typer

    try:
        return step(*args)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)


def _apply_settings(server: Any, settings: Any) -> None:
    """What ``mercato serve`` takes from the settings: the worker class with the edge
    limits, and the level of gunicorn's own lines (LOG_LEVEL)."""
    from mercato.gunicorn_app import worker_class as edge_worker_class

    server.worker_class = edge_worker_class(settings)
    server.cfg.set("loglevel", settings.effective_log_level.lower())
    server.log.setup(server.cfg)


def on_starting(server: Any) -> None:
    """In the master, once, before it listens and forks: what ``mercato serve`` does first."""
    from mercato import cli, serving

    service = _service(server)
    settings = _as_exit(lambda: cli._settings(None, services=[service]))
    _as_exit(cli._configure_logging, settings, service)
    _as_exit(cli._wait_for_dependencies, settings, [service])
    # Before prometheus-client is imported anywhere: the workers inherit the directory.
    serving._share_metrics_between_workers(service, settings.data_dir / "metrics")
    if settings.auto_migrate:
        # Once, before forking: workers migrating side by side would race on the schema.
        # The workers load the settings again themselves: the variable tells them it is done.
        serving.run_event_loop(serving.migrate(settings, [service]))
        os.environ["AUTO_MIGRATE"] = "false"
    server.proc_name = f"mercato-{service}"
    _apply_settings(server, settings)


def on_reload(server: Any) -> None:
    """After SIGHUP re-read this file (and gunicorn's defaults): the settings' part again."""
    from mercato.settings import load_settings

    _apply_settings(server, load_settings())


def child_exit(server: Any, worker: Any) -> None:
    """In the master, after a worker died: drop its metric files (prometheus-client
    multiprocess mode), so that its live gauges stop counting."""
    from mercato.gunicorn_app import child_exit as drop_metrics_of

    drop_metrics_of(server, worker)
