"""Annotated dependencies of the products API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Annotated, Any, NoReturn, TypeVar

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from mercato.platform.app import Context, ServiceContext
from mercato.platform.db import UnitOfWork
from mercato.products.caching import CatalogueCache
from mercato.products.schemas import ProductCreate, ProductUpdate

M = TypeVar("M", bound=BaseModel)


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


async def write_unit_of_work(context: Context) -> AsyncIterator[UnitOfWork]:
    """A unit of work the route commits; left without commit, it rolls back."""
    async with context.db.unit_of_work() as uow:
        yield uow


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a number JSON allows")


def _invalid(errors: list[dict[str, Any]]) -> RequestValidationError:
    return RequestValidationError(errors)


def decimal_json_body(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """Parse a JSON body into ``model`` with every JSON number with a fraction read as a
    ``Decimal``: a price never passes through a float, not even while parsing."""

    async def parse(request: Request) -> M:
        raw = await request.body()
        try:
            data = json.loads(raw, parse_float=Decimal, parse_constant=_refuse_constant)
        except (ValueError, UnicodeDecodeError):
            raise _invalid(
                [{"loc": ("body",), "msg": "The body is not valid JSON.", "type": "json_invalid"}]
            ) from None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise _invalid(
                [
                    {**error, "loc": ("body", *error["loc"])}
                    for error in exc.errors(include_input=False, include_url=False)
                ]
            ) from None

    return parse


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI ``requestBody`` of a route whose body :func:`decimal_json_body` parses."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


Catalogue = Annotated[CatalogueCache, Depends(get_catalogue)]
WriteUnitOfWork = Annotated[UnitOfWork, Depends(write_unit_of_work)]
NewProduct = Annotated[ProductCreate, Depends(decimal_json_body(ProductCreate))]
ProductChanges = Annotated[ProductUpdate, Depends(decimal_json_body(ProductUpdate))]
