"""The catalogue: ``GET /``, paged, filtered by category; and ``GET /search?q=``, the same
list narrowed to the products whose name or description holds ``q``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import Response

from mercato.storefront.api import ApiAnswer, ApiUnavailable
from mercato.storefront.web import AnyVisit, Pager, Visit, render

router = APIRouter()


async def product_list(
    visit: Visit, pager: Pager, *, sort: str | None = "name", **where: str
) -> ApiAnswer:
    """One page of products in ``sort`` order (``None``: the API's own, newest first),
    filtered by ``where`` (the API's query parameters)."""
    params: dict[str, str | int] = {"limit": pager.size, "offset": pager.offset}
    if sort is not None:
        params["sort"] = sort
    return await visit.call("GET", "/products", params={**params, **where})


async def listed_products(
    visit: Visit, pager: Pager, *, sort: str | None = "name", **where: str
) -> tuple[list[dict[str, Any]], Pager]:
    """One page of products and ``pager`` with their total; a filter the API refuses (a
    category or search text outside what it accepts) matches nothing."""
    answer = await product_list(visit, pager, sort=sort, **where)
    if not answer.ok:
        return [], pager.with_total(0)
    return answer.body["items"], pager.with_total(answer.body["total"])


@router.get("/")
async def catalogue(
    visit: AnyVisit, page: str | None = None, category: str | None = None
) -> Response:
    pager = Pager.of(page, visit.storefront.page_size)
    items, pager = await listed_products(
        visit, pager, **({"category": category} if category else {})
    )
    return await render(
        visit, "catalogue.html", {"products": items, "pager": pager, "category": category or ""}
    )


@router.get("/search")
async def search(visit: AnyVisit, q: str = "", page: str | None = None) -> Response:
    pager = Pager.of(page, visit.storefront.page_size)
    terms = q.strip()
    context = {"q": q, "terms": terms, "products": [], "pager": pager}
    if not terms:  # nothing asked yet: the page says what to do
        return await render(visit, "search.html", context)
    answer = await product_list(visit, pager, q=terms)
    if answer.status == 422:  # too long, or a character the API refuses
        reason = answer.field_errors().get("q") or answer.detail
        error = f"These search terms cannot be searched for: {reason}."
        return await render(visit, "search.html", {**context, "error": error}, status=422)
    if not answer.ok:
        raise ApiUnavailable("products")
    return await render(
        visit,
        "search.html",
        {
            **context,
            "products": answer.body["items"],
            "pager": pager.with_total(answer.body["total"]),
        },
    )
