"""Fixtures of the service tier shared by several files: the orders service in-process
against a stand-in products service, and the auth service's logs captured as JSON."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from mercato.platform.logging import configure_logging, reset_logging
from support.orders import OrdersHarness, ProductsStub, orders_client, products_stub


@pytest.fixture
async def products() -> AsyncIterator[ProductsStub]:
    async with products_stub() as stub:
        yield stub


@pytest.fixture
async def orders(tmp_path: Path, products: ProductsStub) -> AsyncIterator[OrdersHarness]:
    async with orders_client(tmp_path, products.url) as harness:
        yield harness


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """The auth service's logs as JSON lines at DEBUG, captured; logging restored after."""
    root_level = logging.getLogger().level
    configure_logging(service="auth", level="DEBUG", fmt="json")
    yield capsys
    structlog.contextvars.clear_contextvars()
    reset_logging()
    logging.getLogger().setLevel(root_level)
