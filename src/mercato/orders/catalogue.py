"""The products the orders service prices an order with: the :class:`Catalogue` it needs and
the adapter that reads it from the products service over HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import urlencode

import structlog

from mercato.orders.domain import PricedProduct
from mercato.platform.errors import UnprocessableEntity
from mercato.platform.http import ServiceClient

log = structlog.stdlib.get_logger("mercato.orders")


class Catalogue(Protocol):
    async def priced(self, product_ids: Sequence[str]) -> dict[str, PricedProduct]:
        """Every product of ``product_ids`` with its current name, price and currency;
        :class:`~mercato.platform.errors.UnprocessableEntity` naming those that do not
        exist; a 503 error when the catalogue cannot answer."""
        ...


class ProductsCatalogue:
    """The products service, read through a resilient :class:`ServiceClient`: one
    ``GET /products?ids=`` for the whole order (DESIGN.md), never one call per line."""

    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    async def priced(self, product_ids: Sequence[str]) -> dict[str, PricedProduct]:
        # The list's commas separate ids, so an id with a comma cannot be asked for: no
        # product has one. A repeated id is asked for once.
        wanted = sorted({pid for pid in product_ids if "," not in pid})
        found = await self._read(wanted) if wanted else {}
        unknown = [index for index, pid in enumerate(product_ids) if pid not in found]
        if unknown:
            raise UnprocessableEntity(
                "The order names products that do not exist.",
                errors=[
                    {"loc": ["body", "items", i, "product_id"], "msg": "unknown product"}
                    for i in unknown
                ],
            )
        return found

    async def _read(self, product_ids: Sequence[str]) -> dict[str, PricedProduct]:
        # ``limit``: every id on the one page, whatever the catalogue's default page size.
        query = urlencode({"ids": ",".join(product_ids), "limit": len(product_ids)}, safe=",")
        answer = await self.client.get(f"/products?{query}")
        if answer.status != 200:
            # Nothing but the ids varies in this request: the catalogue refused them (a
            # list too long for its request line, say), so no product has them.
            log.warning("the catalogue refused an order's product ids", status=answer.status)
            raise UnprocessableEntity(
                "The catalogue refused the order's product ids.",
                errors=[{"loc": ["body", "items"], "msg": "unknown products"}],
            )
        wanted = set(product_ids)
        return {
            str(data["id"]): PricedProduct(
                product_id=str(data["id"]),
                name=str(data["name"]),
                price=_decimal(data["price"]),
                currency=str(data.get("currency") or "USD"),
            )
            for data in answer.json()["items"]
            if data["id"] in wanted
        }


def _decimal(value: Any) -> Decimal:
    return Decimal(str(value))
