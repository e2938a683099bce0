"""Annotated dependencies of the products API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from mercato.platform.app import Context
from mercato.platform.db import UnitOfWork
from mercato.products.caching import CatalogueCache

# These are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in the thread
# pool, which costs more than the whole cached read (bench/products.py).


async def get_catalogue(request: Request) -> CatalogueCache:
    """The products app's catalogue cache (its composition root puts it on ``app.state``)."""
    catalogue: CatalogueCache = request.app.state.catalogue
    return catalogue


async def write_unit_of_work(context: Context) -> AsyncIterator[UnitOfWork]:
    """A unit of work the route commits; left without commit, it rolls back."""
    async with context.db.unit_of_work() as uow:
        yield uow


Catalogue = Annotated[CatalogueCache, Depends(get_catalogue)]
WriteUnitOfWork = Annotated[UnitOfWork, Depends(write_unit_of_work)]
