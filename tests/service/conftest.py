"""Fixtures of the service tier shared by several files: the orders service in-process
against a stand-in products service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from support.orders import OrdersHarness, ProductsStub, orders_client, products_stub


@pytest.fixture
async def products() -> AsyncIterator[ProductsStub]:
    async with products_stub() as stub:
        yield stub


@pytest.fixture
async def orders(tmp_path: Path, products: ProductsStub) -> AsyncIterator[OrdersHarness]:
    async with orders_client(tmp_path, products.url) as harness:
        yield harness
