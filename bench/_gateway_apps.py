"""``constant_app`` (``uvicorn --factory``): raw ASGI answering one pre-serialized product,
the Python limit of the front door (scenario 2)."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Receive, Scope, Send

PRODUCT: dict[str, Any] = {
    "id": "5f0c6f4e-7c1b-4f55-9b3e-2f2a1c0e9d11",
    "sku": "LAMP-001",
    "name": "Desk lamp",
    "description": "A lamp for a desk.",
    "price": "19.99",
    "currency": "USD",
    "category": "lighting",
    "stock": 42,
    "created_at": "2026-11-30T10:00:00Z",
    "updated_at": "2026-11-30T10:00:00Z",
}
_BODY = json.dumps(PRODUCT).encode()
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())]


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _constant(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})


def constant_app() -> Any:
    return _constant
