"""One OpenAPI document for the whole API, and Swagger UI served from the package.

``/openapi.json`` fetches every service's own schema, keeps the paths the gateway routes
(``/<service>/...``), puts them under ``/api/v1``, and merges the components; a schema name
two services define differently is renamed ``<Service><Name>`` in the second. Token URLs of
security schemes are moved under ``/api/v1`` too, so the "Authorize" button of ``/docs``
talks to the auth service through the gateway. Each service's last good schema is kept, so a
service that is down leaves its paths in place (and is named in ``x-unavailable`` until it
has answered once). Every operation also lists what the gateway itself may answer (429,
502, 503, 504).

``/docs`` is Swagger UI from ``static/swagger/`` (no CDN, no inline script: the page obeys
the gateway's Content-Security-Policy).
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import structlog
from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from mercato.gateway.upstreams import Upstream
from mercato.platform.openapi import add_answers, operations

log = structlog.stdlib.get_logger("mercato.gateway.openapi")

STATIC_DIR: Final = Path(__file__).parent / "static"
API_PREFIX: Final = "/api/v1"


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


#: What the gateway itself may answer to any operation it routes.
GATEWAY_ANSWERS: Final[dict[str, dict[str, Any]]] = {
    "429": {
        "description": "Too many requests (the gateway's limits, per client and per user).",
        "headers": {
            "Retry-After": _header("Seconds to wait."),
            "RateLimit-Limit": _header("Requests allowed in the window."),
            "RateLimit-Remaining": _header("Requests left in the window."),
            "RateLimit-Reset": _header("Seconds until the window resets."),
        },
    },
    "502": {"description": "The service did not answer."},
    "503": {"description": "The service, or a dependency of it, is unavailable."},
    "504": {"description": "The service answered too slowly."},
}


def _prefixed_token_url(url: str) -> str:
    return f"{API_PREFIX}{url}" if url.startswith("/") and not url.startswith(API_PREFIX) else url


def service_part(service: str, document: Mapping[str, Any]) -> dict[str, Any]:
    """The part of one service's schema the gateway exposes, with paths under /api/v1."""
    own = f"/{service}"
    paths = {
        f"{API_PREFIX}{path}": item
        for path, item in document.get("paths", {}).items()
        if path == own or path.startswith(own + "/")
    }
    for operation in operations({"paths": paths}):
        add_answers(operation, GATEWAY_ANSWERS)
    components = dict(document.get("components", {}))
    schemes = components.get("securitySchemes", {})
    for scheme in schemes.values():
        for flow in scheme.get("flows", {}).values():
            if "tokenUrl" in flow:
                flow["tokenUrl"] = _prefixed_token_url(flow["tokenUrl"])
            if "refreshUrl" in flow:
                flow["refreshUrl"] = _prefixed_token_url(flow["refreshUrl"])
    return {"paths": paths, "components": components, "tags": document.get("tags", [])}


def merge(
    parts: Mapping[str, Mapping[str, Any]], *, title: str, version: str, description: str
) -> dict[str, Any]:
    """Merge the services' parts (``{service: service_part(...)}``) into one document."""
    merged: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": {},
        "components": {},
        "tags": [],
    }
    seen_tags: set[str] = set()
    for service, part in parts.items():
        part = _rename_conflicts(service, part, merged["components"])
        merged["paths"].update(part["paths"])
        for section, entries in part["components"].items():
            merged["components"].setdefault(section, {}).update(entries)
        for tag in part["tags"]:
            if tag.get("name") not in seen_tags:
                seen_tags.add(tag.get("name"))
                merged["tags"].append(tag)
    if not merged["tags"]:
        del merged["tags"]
    return merged


def _rename_conflicts(
    service: str, part: Mapping[str, Any], existing: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    renames: dict[str, str] = {}
    for section, entries in part["components"].items():
        if section == "securitySchemes":
            continue  # one scheme of the same name is the same auth service
        for name, value in entries.items():
            other = existing.get(section, {}).get(name)
            if other is not None and other != value:
                renames[f"#/components/{section}/{name}"] = (
                    f"#/components/{section}/{service.capitalize()}{name}"
                )
    if not renames:
        return dict(part)
    text = json.dumps(part)
    for old, new in renames.items():
        text = text.replace(json.dumps(old), json.dumps(new))
    renamed: dict[str, Any] = json.loads(text)
    for old, new in renames.items():
        section, old_name = old.rsplit("/", 2)[-2:]
        new_name = new.rsplit("/", 1)[-1]
        entries = renamed["components"][section]
        entries[new_name] = entries.pop(old_name)
    return renamed


@dataclass(eq=False)
class OpenAPIAggregator:
    """Fetches, merges and caches the services' schemas."""

    upstreams: Mapping[str, Upstream]
    _: KW_ONLY
    title: str
    version: str
    description: str
    ttl: float = 30.0
    fetch_timeout: float = 3.0
    _parts: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)
    _document: dict[str, Any] | None = field(default=None, init=False, repr=False)
    _fetched_at: float = field(default=float("-inf"), init=False, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    async def document(self) -> dict[str, Any]:
        async with self._lock:
            if self._document is None or time.monotonic() - self._fetched_at > self.ttl:
                await self._refresh()
            assert self._document is not None
            return self._document

    async def _refresh(self) -> None:
        names = list(self.upstreams)
        results = await asyncio.gather(*(self._fetch(name) for name in names))
        missing: list[str] = []
        for name, document in zip(names, results, strict=True):
            if document is not None:
                self._parts[name] = service_part(name, document)
            elif name not in self._parts:
                missing.append(name)
        merged = merge(
            {name: self._parts[name] for name in names if name in self._parts},
            title=self.title,
            version=self.version,
            description=self.description,
        )
        if missing:
            merged["x-unavailable"] = missing
        self._document = merged
        # A partial document is retried sooner than a complete one.
        self._fetched_at = time.monotonic() - (self.ttl * 0.8 if missing else 0.0)

    async def _fetch(self, name: str) -> dict[str, Any] | None:
        upstream = self.upstreams[name]
        timeout = aiohttp.ClientTimeout(total=self.fetch_timeout)
        for instance in upstream.instances:
            try:
                async with upstream.session.get(
                    instance.base / "openapi.json", timeout=timeout
                ) as response:
                    if response.status == 200:
                        document: dict[str, Any] = await response.json(content_type=None)
                        return document
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("openapi fetch failed", upstream=name, error=type(exc).__name__)
        return None


DOCS_PAGE: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - Swagger UI</title>
<link rel="stylesheet" href="/docs/static/swagger/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="/openapi.json"></div>
<script src="/docs/static/swagger/swagger-ui-bundle.js"></script>
<script src="/docs/static/docs-init.js"></script>
</body>
</html>
"""


def docs_router(document: Callable[[], Awaitable[dict[str, Any]]], *, title: str) -> APIRouter:
    """``/openapi.json`` (the merged document) and ``/docs`` with its static files."""
    router = APIRouter(include_in_schema=False)
    page = DOCS_PAGE.format(title=html.escape(title))

    @router.get("/openapi.json")
    async def openapi() -> JSONResponse:
        return JSONResponse(await document())

    @router.get("/docs")
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    return router


def docs_static() -> Mount:
    """The Swagger UI files and their start-up script, under ``/docs/static``."""
    return Mount("/docs/static", app=StaticFiles(directory=STATIC_DIR), name="docs-static")
