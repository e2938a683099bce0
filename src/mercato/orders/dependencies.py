"""Annotated dependencies of the orders API."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from mercato.orders.service import OrdersService


async def orders_service(request: Request) -> OrdersService:
    """The service the lifespan built (see :func:`mercato.orders.app.orders_runtime`).

    async on purpose: FastAPI runs a plain ``def`` dependency in the thread pool, a thread
    hop on every request that costs more than the lookup."""
    service: OrdersService = request.app.state.orders
    return service


Orders = Annotated[OrdersService, Depends(orders_service)]

#: ``Idempotency-Key``: 1 to 255 printable ASCII characters; anything else is a 422.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x20-\x7e]+$",
        description="Makes a retry safe: the same key and body answer the first answer again.",
    ),
]
