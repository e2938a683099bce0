"""The storefront through the gateway of one `mercato up` (embedded defaults) with a
bootstrapped administrator, shared by the storefront's HTTP and browser tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from support.processes import RunningMercato, free_ports, mercato_up
from support.storefront import ADMIN, ADMIN_PASSWORD, SHOP_ENV, Browser, Stockroom

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMercato]:
    with mercato_up(tmp_path_factory.mktemp("shop"), free_ports(), env=SHOP_ENV) as running:
        yield running


@pytest.fixture
async def browser(shop: RunningMercato) -> AsyncIterator[Browser]:
    """A fresh browser, signed out."""
    async with Browser(shop.base_url) as browser:
        yield browser


@pytest.fixture
async def admin(shop: RunningMercato) -> AsyncIterator[Browser]:
    """A browser signed in as the administrator."""
    async with Browser(shop.base_url) as browser:
        await browser.sign_in(ADMIN, ADMIN_PASSWORD)
        yield browser


@pytest.fixture(scope="session")
def stockroom(shop: RunningMercato) -> Stockroom:
    """Products made through the API as the administrator."""
    return Stockroom(shop.base_url)
