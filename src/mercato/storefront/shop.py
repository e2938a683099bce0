"""The product page: ``GET /products/{id}``, with the order form that ``POST /orders``
(:mod:`.orders`) answers, and renders again when the API refuses the order."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final

from fastapi import APIRouter
from starlette.responses import Response

from mercato.storefront.api import ApiUnavailable
from mercato.storefront.web import AnyVisit, PageError, Visit, render

router = APIRouter()

#: The most units of one product an order line may hold (the orders API's limit).
MAX_QUANTITY: Final = 100
#: The longest id the services store; a longer one names nothing.
MAX_ID_LENGTH: Final = 64


def is_id(value: str) -> bool:
    """Whether ``value`` can be an id in an API path. Dot segments cannot (the API URL is
    normalised, so ``..`` would name another resource), nor can control characters
    (PostgreSQL text cannot hold NUL) or more than the services store."""
    return value not in {".", ".."} and 0 < len(value) <= MAX_ID_LENGTH and value.isprintable()


def path_id(value: str, title: str = "Not found") -> str:
    """An id from a page's path, for an API path: a 404 page when it cannot be one."""
    if not is_id(value):
        raise PageError(404, title, "There is nothing at this address.")
    return value


async def find(visit: Visit, collection: str, item_id: str) -> dict[str, Any] | None:
    """``GET /{collection}/{item_id}`` as this visitor: the item, or None when the API
    shows them none (no such id, a malformed one, or someone else's)."""
    if not is_id(item_id):
        return None
    answer = await visit.call("GET", f"/{collection}/{item_id}")
    if answer.ok:
        item: dict[str, Any] = answer.body
        return item
    if answer.status in (404, 422):
        return None
    raise ApiUnavailable(collection)


def not_sold(status: int = 404) -> PageError:
    return PageError(
        status, "Product not found", "This product does not exist or is no longer sold."
    )


async def product_page(
    visit: Visit,
    product: Mapping[str, Any],
    *,
    status: int = 200,
    values: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
    error: str | None = None,
) -> Response:
    """The product page; ``values`` and ``errors`` fill its order form in again."""
    return await render(
        visit,
        "product.html",
        {
            "product": product,
            "max_quantity": max(1, min(MAX_QUANTITY, int(product["stock"]))),
            "values": {"quantity": "1", "shipping_address": "", **(values or {})},
            "errors": errors or {},
            "error": error,
            # A new key for every form shown: submitting it twice places one order.
            "idempotency_key": uuid.uuid4().hex,
        },
        status=status,
    )


@router.get("/products/{product_id}")
async def product(visit: AnyVisit, product_id: str) -> Response:
    found = await find(visit, "products", product_id)
    if found is None:
        raise not_sold()
    return await product_page(visit, found)
