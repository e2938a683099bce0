"""Fixtures of the fault suite: private server instances the tests may kill."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.rabbit_node import RabbitNode
from support.servers import started


@pytest.fixture(scope="module")
def rabbit_node() -> Iterator[RabbitNode]:
    """A private RabbitMQ node (its own port and config), shared by a module's tests."""
    with started(RabbitNode()) as node:
        yield node
