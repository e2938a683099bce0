"""The guarded protocol counts a request head exactly, however the reads split it."""

from __future__ import annotations

import itertools

import pytest

from mercato.platform.edge import GuardedHttpToolsProtocol, head_size

HEAD = b"GET /products?q=1 HTTP/1.1\r\nHost: gateway.test\r\nX-Pad: bbbb\r\n\r\n"
MESSAGE = HEAD + b"a body\r\n\r\nthat looks like a head end"


def counted(parts: list[bytes]) -> int | None:
    protocol = GuardedHttpToolsProtocol.__new__(GuardedHttpToolsProtocol)
    protocol._head_bytes, protocol._tail, protocol.max_head = 0, b"", 1 << 30
    seen = 0
    for part in parts:
        assert protocol._count_head(part)
        seen += len(part)
        if seen >= len(HEAD):  # where the parser would report the headers complete
            break
    return protocol._head_bytes


@pytest.mark.parametrize("pieces", [1, 2, 3])
def test_the_head_is_counted_exactly_for_every_split(pieces: int) -> None:
    wrong = []
    for cuts in itertools.combinations(range(1, len(MESSAGE)), pieces - 1):
        bounds = [0, *cuts, len(MESSAGE)]
        parts = [MESSAGE[a:b] for a, b in itertools.pairwise(bounds)]
        if counted(parts) != len(HEAD):
            wrong.append(cuts)
    assert wrong == []


def test_the_asgi_estimate_is_close_to_the_wire_size() -> None:
    scope = {
        "raw_path": b"/products",
        "query_string": b"q=1",
        "headers": [(b"host", b"gateway.test"), (b"x-pad", b"bbbb")],
    }
    assert abs(head_size(scope) - len(HEAD)) <= 16
