"""The catalogue: ``GET /``, paged, filtered by category."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from mercato.storefront.web import AnyVisit, Pager, render

router = APIRouter()


@router.get("/")
async def catalogue(
    visit: AnyVisit, page: str | None = None, category: str | None = None
) -> Response:
    pager = Pager.of(page, visit.storefront.page_size)
    params: dict[str, str | int] = {"limit": pager.size, "offset": pager.offset, "sort": "name"}
    if category:
        params["category"] = category
    answer = await visit.call("GET", "/products", params=params)
    if not answer.ok:  # a category outside what the API accepts: no such products
        items, total = [], 0
    else:
        items, total = answer.body["items"], answer.body["total"]
    return await render(
        visit,
        "catalogue.html",
        {"products": items, "pager": pager.with_total(total), "category": category or ""},
    )
