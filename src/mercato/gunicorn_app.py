"""`mercato serve SERVICE --workers N`: gunicorn managing N uvicorn worker processes."""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI
from gunicorn.app.base import BaseApplication
from uvicorn_worker import UvicornWorker

from mercato.platform.settings import ServiceName, Settings


class MercatoUvicornWorker(UvicornWorker):  # type: ignore[misc]
    """uvicorn worker that leaves logging, access lines and banners to Mercato."""

    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "auto",
        "http": "auto",
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,
    }


def child_exit(_server: Any, worker: Any) -> None:
    """Drop a dead worker's metric files (prometheus-client multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


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
            "worker_class": f"{__name__}.MercatoUvicornWorker",
            "graceful_timeout": int(self.settings.graceful_timeout),
            "keepalive": 75,
            "child_exit": child_exit,
            "proc_name": f"mercato-{self.service}",
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> FastAPI:
        from mercato.serving import app_factory

        return app_factory(self.service)(self.settings)
