"""One HTTP request driven straight through an ASGI app, for what an HTTP client would not
send: repeated headers, a body longer than its Content-Length, a client that hangs up."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Message = dict[str, Any]


async def call_asgi(
    app: Any,
    method: str,
    path: str,
    *,
    headers: Sequence[tuple[bytes, bytes]] = (),
    messages: Sequence[Message] = (),
    client: tuple[str, int] = ("127.0.0.1", 40000),
    server: tuple[str, int] = ("test", 80),
) -> list[Message]:
    """Call ``app`` with exactly ``headers``; ``receive`` hands out ``messages`` in order,
    then ``http.disconnect`` (the client is gone). Returns every message the app sent."""
    pending = list(messages)
    sent: list[Message] = []

    async def receive() -> Message:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": list(headers),
        "client": client,
        "server": server,
        "state": {},
    }
    await app(scope, receive, send)
    return sent
