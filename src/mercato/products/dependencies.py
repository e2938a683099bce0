"""Annotated dependencies of the products API."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mercato.platform.app import ServiceContext
from mercato.products.caching import CatalogueCache

# These are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in the thread
# pool, which costs more than the whole cached read (bench/products.py).


async def get_catalogue(request: Request) -> CatalogueCache:
    catalogue: CatalogueCache = request.app.state.catalogue
    return catalogue


def read_dependencies(request: Request) -> tuple[ServiceContext, CatalogueCache]:
    """The context and the catalogue cache, for the two read routes.

    Taken from ``app.state`` directly rather than through ``Depends``: on a cache hit,
    resolving dependencies was the largest cost of the request after routing, and these two
    need no resolving (bench/products.py measures the read path against a constant body).
    """
    state = request.app.state
    return state.context, state.catalogue


Catalogue = Annotated[CatalogueCache, Depends(get_catalogue)]
