"""`mercato serve SERVICE --workers N`: gunicorn managing N uvicorn worker processes.

gunicorn's and uvicorn's own lines go through Mercato's logging pipeline (configured in the
master before it forks, so every worker inherits it): :class:`StructuredGunicornLogger`
gives gunicorn's loggers no handler of their own, and :class:`MercatoUvicornWorker` undoes
the uvicorn-worker package's rewiring of uvicorn's loggers onto gunicorn's handlers.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from fastapi import FastAPI
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.glogging import Logger
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from mercato.platform.logging import UVICORN_LOGGERS
from mercato.settings import SERVICES, ServiceName, Settings, load_settings


class StructuredGunicornLogger(Logger):  # type: ignore[misc]
    """gunicorn's error and access loggers, propagating to the root handlers (Mercato's
    structured pipeline) instead of writing plain text lines of their own."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in list(log.handlers):
                if getattr(handler, "_gunicorn", False):
                    log.removeHandler(handler)
            log.propagate = True


class MercatoUvicornWorker(UvicornWorker):  # type: ignore[misc]
    """uvicorn worker that leaves logging, access lines and banners to Mercato. Use
    :func:`worker_class` for one that also has the edge limits of the settings."""

    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "auto",
        "http": "auto",
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # UvicornWorker points uvicorn's loggers at gunicorn's handlers and stops them
        # propagating; Mercato's pipeline sits on the root logger.
        for name in UVICORN_LOGGERS:
            uvicorn_logger = logging.getLogger(name)
            uvicorn_logger.handlers = []
            uvicorn_logger.setLevel(logging.NOTSET)
            uvicorn_logger.propagate = True
        # uvicorn's protocols write an access line whenever uvicorn.access has a handler,
        # the root's through propagation included: Mercato's middleware writes the one line.
        logging.getLogger("uvicorn.access").propagate = False

    async def _serve(self) -> None:
        # The listening sockets go to uvicorn unwrapped. Given gunicorn's wrapper objects,
        # uvloop closes the file descriptor on shutdown without detaching the socket the
        # wrapper holds, so uvicorn's own close() then fails with EBADF ("Error while
        # closing socket [Errno 9] Bad file descriptor"), or closes a reused descriptor.
        self.config.app = self.wsgi
        server = Server(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=[listener.sock for listener in self.sockets])
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)


def worker_class(settings: Settings) -> type[MercatoUvicornWorker]:
    """The worker class for ``settings``: uvicorn in every worker holds against hostile
    clients as under ``mercato up`` (head size, read timeout, connection limit)."""
    from mercato.serving import edge_options

    options = {**MercatoUvicornWorker.CONFIG_KWARGS, **edge_options(settings)}
    return type("MercatoUvicornWorker", (MercatoUvicornWorker,), {"CONFIG_KWARGS": options})


def child_exit(_server: Any, worker: Any) -> None:
    """Drop a dead worker's metric files (prometheus-client multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def asgi_app(service: str) -> FastAPI:
    """The app of ``service`` as ``mercato serve`` builds it, from the settings of every
    source: what each worker loads when gunicorn's own command runs a service
    (``gunicorn -c deploy/gunicorn.conf.py 'mercato.gunicorn_app:asgi_app("products")'``).
    Raises :class:`ValueError` for a name that is not a service."""
    from mercato.serving import app_factory

    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}")
    return app_factory(service)(load_settings())


class GunicornApplication(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, service: ServiceName, *, workers: int) -> None:
        self.settings = settings
        self.service = service
        self.workers = workers
        super().__init__()

    def load_config(self) -> None:
        options = {
            "bind": f"{self.settings.host}:{self.settings.service_port(self.service)}",
            "workers": self.workers,
            "worker_class": worker_class(self.settings),
            "logger_class": f"{__name__}.StructuredGunicornLogger",
            "loglevel": self.settings.effective_log_level.lower(),
            "graceful_timeout": int(self.settings.graceful_timeout),
            "keepalive": self.settings.keep_alive_timeout,
            "child_exit": child_exit,
            "proc_name": f"mercato-{self.service}",
            # gunicorn 23+ opens a control socket at one path per user
            # (~/.gunicorn/gunicorn.ctl): several masters on one machine would take it
            # from each other. Mercato is run by signals and needs none.
            "control_socket_disable": True,
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> FastAPI:
        from mercato.serving import app_factory

        return app_factory(self.service)(self.settings)
