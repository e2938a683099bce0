"""The administrators' orders page: ``GET /admin/orders``, every user's orders, newest
first, filtered by status (the orders API's ``all=true`` and ``status``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final

from fastapi import APIRouter
from starlette.responses import Response

from mercato.storefront.api import ApiUnavailable
from mercato.storefront.web import AdminVisit, PageError, Pager, Visit, render

router = APIRouter(prefix="/admin/orders")

#: The filter's choices: the order statuses of API.md.
STATUSES: Final = ("pending", "confirmed", "rejected", "cancelled")


@router.get("")
async def orders(visit: AdminVisit, page: str | None = None, status: str | None = None) -> Response:
    pager = Pager.of(page, visit.storefront.page_size)
    chosen = status if status in STATUSES else ""  # anything else: every status
    params: dict[str, str | int] = {"all": "true", "limit": pager.size, "offset": pager.offset}
    if chosen:
        params["status"] = chosen
    answer = await visit.call("GET", "/orders", params=params)
    if not answer.ok:  # the parameters are valid by construction: the token lost its role
        raise PageError(403, "Forbidden", "This page is for administrators.")
    items: list[dict[str, Any]] = answer.body["items"]
    names = await _usernames(visit, {order["user_id"] for order in items})
    rows = [
        {
            **order,
            "username": names.get(order["user_id"]),
            "placed": _placed(order["created_at"]),
        }
        for order in items
    ]
    return await render(
        visit,
        "admin/orders.html",
        {
            "orders": rows,
            "pager": pager.with_total(answer.body["total"]),
            "status": chosen,
            "statuses": STATUSES,
        },
    )


async def _usernames(visit: Visit, user_ids: Iterable[str]) -> dict[str, str]:
    """The usernames of ``user_ids`` that the users service names; a profile it cannot
    show (not made yet, or the service is down) leaves the page showing the id."""

    async def one(user_id: str) -> tuple[str, str | None]:
        try:
            answer = await visit.call("GET", f"/users/{user_id}")
        except ApiUnavailable:
            return user_id, None
        return user_id, str(answer.body["username"]) if answer.ok else None

    found = await asyncio.gather(*(one(user_id) for user_id in user_ids))
    return {user_id: name for user_id, name in found if name is not None}


def _placed(timestamp: str) -> str:
    """``2026-12-01T14:39:53.123Z`` as ``2026-12-01 14:39 UTC``."""
    return datetime.fromisoformat(timestamp).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
