"""The orders routes (API.md, "Orders service"): thin, each calls one use case."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from mercato.orders.dependencies import IdempotencyKey, Orders
from mercato.orders.domain import OrderStatus
from mercato.orders.schemas import OrderOut, OrderPage, PlaceOrder
from mercato.platform.errors import Forbidden
from mercato.platform.http import public_url
from mercato.platform.schemas import MAX_OFFSET, NUL_FREE
from mercato.platform.security.dependencies import CurrentUser

router = APIRouter(prefix="/orders", tags=["orders"])

#: An order id in a path: PostgreSQL text cannot hold NUL (a 422, not a 500).
OrderId = Annotated[str, Path(pattern=NUL_FREE)]


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {}}}


AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _problem("Missing or invalid access token."),
}


@router.post(
    "",
    status_code=201,
    response_model=OrderOut,
    summary="Place an order (pending until stock is reserved)",
    responses={
        201: {
            "description": "Placed (pending until stock is reserved).",
            "headers": {
                "Location": {
                    "description": "The order's public URL, `/api/v1/orders/{id}`.",
                    "schema": {"type": "string"},
                }
            },
        },
        **AUTH_ERRORS,
        409: _problem("A request with this Idempotency-Key is still in flight."),
        422: _problem("Invalid body, unknown product, or a key reused with another body."),
        503: _problem("The products service is unavailable; nothing was written."),
    },
)
async def place_order(
    body: PlaceOrder, user: CurrentUser, orders: Orders, idempotency_key: IdempotencyKey = None
) -> Response:
    answer = await orders.place(user.user_id, body, idempotency_key)
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else {}
    if answer.status == 201:  # a replay points at the same order
        headers["Location"] = public_url(f"/orders/{json.loads(answer.body)['id']}")
    return Response(
        answer.body, status_code=answer.status, media_type=answer.media_type, headers=headers
    )


# The gateway may forward `/api/v1/orders/` as `/orders/`; answer it rather than redirect a POST.
router.add_api_route("/", place_order, methods=["POST"], status_code=201, include_in_schema=False)


@router.get("", response_model=OrderPage, responses=AUTH_ERRORS | {403: _problem("all=true")})
async def list_orders(
    user: CurrentUser,
    orders: Orders,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    everyone: Annotated[bool, Query(alias="all", description="admin: every user's")] = False,
    status: Annotated[
        OrderStatus | None, Query(description="only the orders in this status")
    ] = None,
) -> OrderPage:
    """The caller's orders, newest first (an admin passes ``all=true`` for everyone's),
    optionally only those in one ``status``."""
    if everyone and not user.is_admin:
        raise Forbidden("Only an administrator may list every user's orders.")
    return await orders.page(user, everyone=everyone, status=status, limit=limit, offset=offset)


@router.get(
    "/{order_id}",
    response_model=OrderOut,
    responses=AUTH_ERRORS | {404: _problem("No such order (or not yours).")},
)
async def get_order(order_id: OrderId, user: CurrentUser, orders: Orders) -> OrderOut:
    return await orders.get(user, order_id)


@router.post(
    "/{order_id}/cancel",
    response_model=OrderOut,
    responses=AUTH_ERRORS
    | {
        404: _problem("No such order (or not yours)."),
        409: _problem("The order is rejected or already cancelled."),
    },
)
async def cancel_order(order_id: OrderId, user: CurrentUser, orders: Orders) -> OrderOut:
    """Cancel a pending or confirmed order; its reserved stock is released."""
    return await orders.cancel(user, order_id)
