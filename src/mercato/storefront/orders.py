"""The signed-in user's orders: ``GET /orders`` (with live status), ``POST /orders`` (from
the product page), ``POST /orders/{id}/cancel``, and ``GET /orders/status``, the JSON that
``static/orders.js`` polls to update the page while an order is pending.

Placing an order sends the form's ``idempotency_key`` (a new one for every form shown) as
the API's ``Idempotency-Key``: a form submitted twice places one order.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Any, Final

from fastapi import APIRouter
from starlette.responses import JSONResponse, Response

from mercato.platform.errors import problem
from mercato.platform.middleware import request_id_var
from mercato.storefront.api import ApiUnavailable
from mercato.storefront.shop import find, not_sold, path_id, product_page
from mercato.storefront.web import (
    AnyVisit,
    CheckedForm,
    PageError,
    Pager,
    SignedInVisit,
    redirect,
    render,
    text,
)

router = APIRouter()

#: Orders on one page of ``/orders``, and so the most ids one status request may ask about.
ORDERS_PER_PAGE: Final = 10
#: The statuses an order may still be cancelled in (API.md, "Orders service").
CANCELLABLE: Final = frozenset({"pending", "confirmed"})
#: A quantity as typed: sent as a number; anything else goes as typed, for the API to refuse.
_WHOLE_NUMBER: Final = re.compile(r"-?[0-9]{1,9}")


@router.get("/orders")
async def my_orders(visit: SignedInVisit, page: str | None = None) -> Response:
    pager = Pager.of(page, ORDERS_PER_PAGE)
    answer = await visit.call(
        "GET", "/orders", params={"limit": pager.size, "offset": pager.offset}
    )
    if not answer.ok:
        raise ApiUnavailable("orders")
    orders = [_shown(order) for order in answer.body["items"]]
    return await render(
        visit,
        "orders.html",
        {
            "orders": orders,
            "pager": pager.with_total(answer.body["total"]),
            "pending": any(order["status"] == "pending" for order in orders),
        },
    )


def _shown(order: dict[str, Any]) -> dict[str, Any]:
    """An order as the page shows it: when it was placed, and whether it may be cancelled."""
    placed = datetime.fromisoformat(order["created_at"])
    return {
        **order,
        "placed": placed.strftime("%Y-%m-%d %H:%M %Z").strip(),
        "cancellable": order["status"] in CANCELLABLE,
    }


@router.post("/orders")
async def place_order(form: CheckedForm, visit: SignedInVisit) -> Response:
    product_id = text(form, "product_id")
    quantity = text(form, "quantity").strip()
    address = text(form, "shipping_address").strip()
    body: dict[str, Any] = {
        "items": [
            {
                "product_id": product_id,
                "quantity": int(quantity) if _WHOLE_NUMBER.fullmatch(quantity) else quantity,
            }
        ]
    }
    if address:
        body["shipping_address"] = address
    key = text(form, "idempotency_key")
    answer = await visit.call(
        "POST", "/orders", json_body=body, headers={"Idempotency-Key": key} if key else None
    )
    if answer.status == 201:
        visit.flash("Your order was placed; its status below changes once its stock is reserved.")
        return await redirect(visit, "/orders")
    if answer.status == 409:  # the same form sent twice: the first is still being placed
        visit.flash("Your order is being placed.")
        return await redirect(visit, "/orders")
    if answer.status != 422:
        raise ApiUnavailable("orders")
    errors = answer.field_errors()
    product = await find(visit, "products", product_id) if "product_id" not in errors else None
    if product is None:
        raise not_sold(422)
    return await product_page(
        visit,
        product,
        status=422,
        values={"quantity": quantity, "shipping_address": address},
        errors=errors,
        error="The order was not placed. "
        + (
            "Check the fields below."
            if errors.keys() & {"quantity", "shipping_address"}
            else answer.detail or "Try again."
        ),
    )


@router.post("/orders/{order_id}/cancel")
async def cancel_order(_form: CheckedForm, visit: SignedInVisit, order_id: str) -> Response:
    answer = await visit.call("POST", f"/orders/{path_id(order_id, 'Order not found')}/cancel")
    if answer.ok:
        visit.flash("Your order was cancelled.")
    elif answer.status == 409:
        visit.flash("This order can no longer be cancelled.")
    elif answer.status in (404, 422):  # not the user's, or no such order
        raise PageError(404, "Order not found", "You have no order at this address.")
    else:
        raise ApiUnavailable("orders")
    return await redirect(visit, "/orders")


@router.get("/orders/status")
async def order_statuses(visit: AnyVisit, ids: str = "") -> Response:
    """``{id: status}`` for the signed-in user's orders among ``ids`` (comma-separated, at
    most a page of them); an id that is not one of theirs is left out, as an unknown one is."""
    if visit.user is None:
        return await visit.finish(_problem(401, "Sign in to see your orders."))
    wanted = list(dict.fromkeys(one for one in ids.split(",") if one))
    if len(wanted) > ORDERS_PER_PAGE:
        return await visit.finish(_problem(422, f"Ask about at most {ORDERS_PER_PAGE} orders."))
    user_id = visit.user.user_id
    statuses: dict[str, str] = {}
    for order_id, answer in zip(
        wanted,
        await asyncio.gather(*(find(visit, "orders", order_id) for order_id in wanted)),
        strict=True,
    ):
        # An administrator may read anyone's order; this answer is about one's own only.
        if answer is not None and answer.get("user_id") == user_id:
            statuses[order_id] = answer["status"]
    return await visit.finish(JSONResponse(statuses))


def _problem(status: int, detail: str) -> Response:
    return problem(status, detail=detail, request_id=request_id_var.get())
