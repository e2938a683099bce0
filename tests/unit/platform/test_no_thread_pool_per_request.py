"""No route of any app runs a plain ``def`` endpoint or dependency: FastAPI would run it in
the thread pool, a thread hop on every request that costs more than most lookups it does
(measured on ``GET /orders/{id}``: bench/PROFILE.md)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from support.auth import test_settings


def _apps() -> Iterator[tuple[str, Callable[[Any], FastAPI]]]:
    from mercato.auth.app import create_app as auth
    from mercato.gateway.app import create_app as gateway
    from mercato.orders.app import create_app as orders
    from mercato.products.app import create_app as products
    from mercato.users.app import create_app as users

    yield from {
        "auth": auth,
        "users": users,
        "products": products,
        "orders": orders,
        "gateway": gateway,
    }.items()


def _runs_on_the_loop(call: Callable[..., Any]) -> bool:
    if inspect.isclass(call):
        return False  # a class as a dependency is instantiated in the thread pool
    method = call if inspect.isfunction(call) or inspect.ismethod(call) else call.__call__  # type: ignore[operator]
    return inspect.iscoroutinefunction(method) or inspect.isasyncgenfunction(method)


def _api_routes(routes: Any) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)  # an included router (FastAPI 0.16x)
        if included is not None:
            yield from _api_routes(included.routes)


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


@pytest.mark.parametrize(("service", "create_app"), list(_apps()))
def test_every_endpoint_and_dependency_is_async(
    service: str, create_app: Callable[[Any], FastAPI]
) -> None:
    app = create_app(test_settings())
    routes = list(_api_routes(app.routes))
    assert routes, f"{service} has no API routes"
    sync = {
        f"{route.path}: {getattr(call, '__qualname__', repr(call))}"
        for route in routes
        for call in _calls(route.dependant)
        if not _runs_on_the_loop(call)
    }
    assert not sync, f"{service} runs these in the thread pool per request: {sorted(sync)}"
