"""Black-box order flows through the gateway, shared by the e2e test, the fault test and
``bench/orders.py``: sign users up, stock a product, place orders, wait for them to settle.

Everything goes through the public API (``/api/v1/...``) with an ``httpx.AsyncClient``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

ADMIN_USERNAME = "shopadmin"
ADMIN_PASSWORD = "Admin-pass-1234"  # only for throw-away test instances

#: Settings for a `mercato up` that tests and benchmarks drive hard from one address.
FLOW_ENV = {
    "MERCATO_ADMIN_USERNAME": ADMIN_USERNAME,
    "MERCATO_ADMIN_PASSWORD": ADMIN_PASSWORD,
    "RATE_LIMIT_API": "1000000/minute",
    "RATE_LIMIT_USER": "1000000/minute",
    "RATE_LIMIT_LOGIN": "1000/minute",
    "RATE_LIMIT_LOGIN_ADDRESS": "100000/minute",
    "SEED_DEMO_CATALOGUE": "false",
    # Cheap password hashing: these runs sign many shoppers up and measure orders, not Argon2.
    "ARGON2_TIME_COST": "1",
    "ARGON2_MEMORY_COST": "1024",
    "ARGON2_PARALLELISM": "1",
}

SETTLED = frozenset({"confirmed", "rejected", "cancelled"})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(client: httpx.AsyncClient, username: str, password: str) -> str:
    response = await client.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


async def admin_token(client: httpx.AsyncClient) -> str:
    return await login(client, ADMIN_USERNAME, ADMIN_PASSWORD)


@dataclass
class Shopper:
    username: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)


async def sign_up(client: httpx.AsyncClient, count: int, *, concurrency: int = 8) -> list[Shopper]:
    """``count`` new users, registered and signed in."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> Shopper:
        async with gate:
            name = f"u{uuid.uuid4().hex[:12]}"
            password = "Shopper-pass-1"
            response = await client.post(
                "/api/v1/auth/register",
                json={"username": name, "email": f"{name}@example.com", "password": password},
            )
            response.raise_for_status()
            return Shopper(name, await login(client, name, password))

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def create_product(
    client: httpx.AsyncClient, token: str, *, stock: int, price: str = "9.99"
) -> str:
    sku = f"SKU-{uuid.uuid4().hex[:10]}"
    response = await client.post(
        "/api/v1/products",
        json={"sku": sku, "name": f"Item {sku}", "price": price, "stock": stock},
        headers=bearer(token),
    )
    response.raise_for_status()
    return str(response.json()["id"])


async def stock_of(client: httpx.AsyncClient, product_id: str) -> int:
    response = await client.get(
        f"/api/v1/products/{product_id}", headers={"Cache-Control": "no-cache"}
    )
    response.raise_for_status()
    return int(response.json()["stock"])


@dataclass
class Placement:
    """What a client saw placing one order, retries included."""

    key: str
    status: int | None = None
    order_id: str | None = None
    attempts: int = 0
    started: float = field(default_factory=time.perf_counter)
    errors: list[str] = field(default_factory=list)


async def place_with_retries(
    client: httpx.AsyncClient,
    shopper: Shopper,
    items: Sequence[dict[str, Any]],
    *,
    key: str | None = None,
    max_attempts: int = 30,
    backoff: float = 0.2,
) -> Placement:
    """POST /api/v1/orders with an Idempotency-Key, retrying on 409, 5xx and network errors
    (as a well-behaved client does) until a final answer or ``max_attempts``."""
    placement = Placement(key or uuid.uuid4().hex)
    headers = {**shopper.headers, "Idempotency-Key": placement.key}
    for attempt in range(max_attempts):
        placement.attempts = attempt + 1
        try:
            response = await client.post(
                "/api/v1/orders", json={"items": list(items)}, headers=headers
            )
        except httpx.HTTPError as exc:
            placement.errors.append(type(exc).__name__)
        else:
            placement.status = response.status_code
            if response.status_code < 500 and response.status_code != 409:
                if response.status_code == 201:
                    placement.order_id = str(response.json()["id"])
                return placement
            placement.errors.append(str(response.status_code))
        await asyncio.sleep(min(backoff * 2**attempt, 2.0))
    return placement


async def order_of(client: httpx.AsyncClient, shopper: Shopper, order_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/orders/{order_id}", headers=shopper.headers)
    response.raise_for_status()
    order: dict[str, Any] = response.json()
    return order


async def wait_settled(
    client: httpx.AsyncClient,
    owned: Sequence[tuple[Shopper, str]],
    *,
    within: float = 30.0,
    interval: float = 0.05,
) -> dict[str, dict[str, Any]]:
    """Poll every order until none is pending; returns ``{order_id: order}`` and, under
    ``"_settled_at"``, when each was first seen settled (``time.perf_counter``)."""
    deadline = time.monotonic() + within
    orders: dict[str, dict[str, Any]] = {}
    waiting = list(owned)
    while waiting:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(waiting)} orders still pending after {within}s")
        seen = await asyncio.gather(*(order_of(client, s, oid) for s, oid in waiting))
        now = time.perf_counter()
        still: list[tuple[Shopper, str]] = []
        for (shopper, order_id), order in zip(waiting, seen, strict=True):
            if order["status"] in SETTLED:
                order["_settled_at"] = now
                orders[order_id] = order
            else:
                still.append((shopper, order_id))
        waiting = still
        if waiting:
            await asyncio.sleep(interval)
    return orders
