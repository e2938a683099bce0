"""Annotated dependencies of the products API."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mercato.messaging import Outbox
from mercato.products.caching import CatalogueCache

# These are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in the thread
# pool, which costs more than the whole cached read (bench/products.py).


async def get_catalogue(request: Request) -> CatalogueCache:
    """The products app's catalogue cache (its composition root puts it on ``app.state``)."""
    catalogue: CatalogueCache = request.app.state.catalogue
    return catalogue


async def get_outbox(request: Request) -> Outbox:
    """The products service's outbox, built in its composition root (``app.py``)."""
    outbox: Outbox = request.app.state.outbox
    return outbox


Catalogue = Annotated[CatalogueCache, Depends(get_catalogue)]
ProductsOutbox = Annotated[Outbox, Depends(get_outbox)]
