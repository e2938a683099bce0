"""Thin routes of the products API (API.md, "Products service")."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError

from mercato.platform.app import Context
from mercato.platform.http import public_url
from mercato.platform.schemas import MAX_OFFSET, NUL_FREE
from mercato.platform.security.dependencies import AdminUser
from mercato.products import service
from mercato.products.caching import Representation
from mercato.products.dependencies import Catalogue, ProductsOutbox
from mercato.products.domain import ProductSort
from mercato.products.repository import ProductFilter
from mercato.products.schemas import (
    IDS_TEXT,
    MAX_IDS,
    MAX_IDS_TEXT,
    Price,
    ProductCreate,
    ProductOut,
    ProductPage,
    ProductUpdate,
    product_ids,
)
from mercato.settings import Settings

router = APIRouter(prefix="/products", tags=["products"])

PROBLEM: dict[str, Any] = {"content": {"application/problem+json": {}}}
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified: the `If-None-Match` validator still matches."}
}
ADMIN_ONLY: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid bearer token.", **PROBLEM},
    403: {"description": "The token lacks the admin role.", **PROBLEM},
    422: {"description": "Invalid input.", **PROBLEM},
}

LOCATION: dict[str, Any] = {
    "description": "The new product's public URL, `/api/v1/products/{id}`.",
    "schema": {"type": "string"},
}
QueryPrice = Annotated[Price | None, Query()]
QueryIds = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_IDS_TEXT,
        json_schema_extra={"pattern": IDS_TEXT},  # product_ids() refuses the rest, saying why
        description=f"Exactly these products: up to {MAX_IDS} comma-separated ids. Unless"
        " `limit` is given, the page holds all of them.",
    ),
]
DEFAULT_LIMIT = 20


def cached_response(request: Request, representation: Representation, max_age: int) -> Response:
    """The representation with its HTTP validators, or 304 when the client's still match."""
    headers = {"ETag": representation.etag, "Cache-Control": f"public, max-age={max_age}"}
    if last_modified := representation.http_last_modified:
        headers["Last-Modified"] = last_modified
    if representation.not_modified(
        request.headers.get("if-none-match"), request.headers.get("if-modified-since")
    ):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(representation.body, media_type="application/json", headers=headers)


@router.get(
    "",
    summary="List products",
    responses={200: {"model": ProductPage}, **NOT_MODIFIED, 422: PROBLEM},
)
async def list_products(
    request: Request,
    context: Context,
    catalogue: Catalogue,
    q: Annotated[str | None, Query(min_length=1, max_length=200, pattern=NUL_FREE)] = None,
    category: Annotated[str | None, Query(min_length=1, max_length=64, pattern=NUL_FREE)] = None,
    min_price: QueryPrice = None,
    max_price: QueryPrice = None,
    ids: QueryIds = None,
    sort: ProductSort = ProductSort.CREATED_AT_DESC,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=100,
            description=f"Page size: {DEFAULT_LIMIT}, or with `ids` the number of ids.",
        ),
    ] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> Response:
    wanted = _parse_ids(ids)
    where = ProductFilter(
        q=q,
        category=category.strip().lower() if category is not None else None,
        min_price=min_price,
        max_price=max_price,
        ids=wanted,
    )
    if limit is None:  # an ids request is never cut short by the default page size
        limit = DEFAULT_LIMIT if wanted is None else len(wanted)
    page = await service.read_product_page(
        context.db, catalogue, where, sort, limit=limit, offset=offset
    )
    return cached_response(request, page, Settings.of(context.settings).product_list_max_age)


def _parse_ids(text: str | None) -> frozenset[str] | None:
    if text is None:
        return None
    try:
        return product_ids(text)
    except ValueError as exc:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("query", "ids"), "msg": str(exc)}]
        ) from None


@router.get(
    "/{product_id}",
    summary="Get one product",
    responses={200: {"model": ProductOut}, **NOT_MODIFIED, 404: PROBLEM},
)
async def get_product(
    product_id: str, request: Request, context: Context, catalogue: Catalogue
) -> Response:
    product = await service.read_product(context.db, catalogue, product_id)
    return cached_response(request, product, Settings.of(context.settings).product_max_age)


@router.post(
    "",
    summary="Add a product (admin)",
    status_code=status.HTTP_201_CREATED,
    response_model=ProductOut,
    responses={
        201: {"description": "Created.", "headers": {"Location": LOCATION}},
        **ADMIN_ONLY,
        409: {"description": "The sku is taken.", **PROBLEM},
    },
)
async def create_product(
    _admin: AdminUser,
    body: ProductCreate,
    context: Context,
    outbox: ProductsOutbox,
    catalogue: Catalogue,
    response: Response,
) -> ProductOut:
    product = await service.create_product(context.db, outbox, catalogue, body)
    response.headers["Location"] = public_url(f"/products/{product.id}")
    return product


@router.patch(
    "/{product_id}",
    summary="Change a product (admin)",
    response_model=ProductOut,
    responses={**ADMIN_ONLY, 404: PROBLEM},
)
async def update_product(
    product_id: str,
    _admin: AdminUser,
    body: ProductUpdate,
    context: Context,
    outbox: ProductsOutbox,
    catalogue: Catalogue,
) -> ProductOut:
    return await service.update_product(context.db, outbox, catalogue, product_id, body)


@router.delete(
    "/{product_id}",
    summary="Remove a product (admin)",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**ADMIN_ONLY, 404: PROBLEM},
)
async def delete_product(
    product_id: str,
    _admin: AdminUser,
    context: Context,
    outbox: ProductsOutbox,
    catalogue: Catalogue,
) -> Response:
    await service.delete_product(context.db, outbox, catalogue, product_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
