"""AWS Lambda entry points: each HTTP service's ASGI app behind Mangum, for API Gateway
(HTTP API, payload 2.0, or REST API), an Application Load Balancer or a function URL.

A function's handler is ``mercato.lambda_handlers.<service>``: :func:`gateway`,
:func:`auth`, :func:`users`, :func:`products` or :func:`orders` (install the package with
its ``lambda`` extra, which brings Mangum). On a cold start the first invocation builds the
service's app from the settings in the function's environment (checked as ``mercato
serve`` checks them: a refused setting fails the start, naming it), configures the
structured logs (JSON in production, to CloudWatch through stderr), and keeps it for the
life of the execution environment.

The app's lifespan (what opens the service's database pool, cache, broker and token
verifier, and starts its outbox relay and event consumers) runs once, at that cold start,
and the connections serve every invocation after it. Mangum's own per-invocation
lifespan (``lifespan="auto"``) is off: it would open and close every connection around
each request, and a Mercato app's lifespan runs once per app (its metrics are registered
by it). Between invocations Lambda freezes the process, so the relay and the consumers run
only while an invocation does; the work that needs a process that keeps running goes to
``mercato worker --service all`` (relays and consumers) and ``mercato worker`` (the
notification mails) on ECS or EC2 beside the functions: docs/deploy.md ("Platforms").
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

from mangum import Mangum
from mangum.protocols import LifespanCycle
from mangum.types import LambdaContext, LambdaEvent

from mercato.settings import ServiceName, load_settings

__all__ = ["auth", "gateway", "handler_for", "orders", "products", "shutdown", "users"]


#: The services started in this execution environment: their adapter and their lifespan.
_started: dict[ServiceName, tuple[Mangum, LifespanCycle]] = {}


def handler_for(service: ServiceName) -> Mangum:
    """The Mangum adapter of ``service``'s app, built and started (its lifespan entered)
    once per execution environment.

    Raises :class:`~mercato.platform.settings.ConfigError` for settings start-up refuses,
    and Mangum's ``LifespanFailure`` when the app's start-up fails."""
    if service in _started:
        return _started[service][0]
    from mercato.platform.logging import configure_logging
    from mercato.serving import app_factory

    settings = load_settings()
    settings.check([service])
    configure_logging(
        service=service,
        level=settings.effective_log_level,
        fmt=settings.log_format or "console",
    )
    _give_the_thread_an_event_loop()
    app = app_factory(service)(settings)
    lifespan = LifespanCycle(app, "on")
    lifespan.__enter__()
    adapter = Mangum(app, lifespan="off")
    _started[service] = (adapter, lifespan)
    return adapter


def shutdown() -> None:
    """End the lifespan of every app started here (its connections closed, its background
    work stopped), for a runtime that announces its end, and for tests."""
    while _started:
        _, (_, lifespan) = _started.popitem()
        lifespan.__exit__(None, None, None)


def _give_the_thread_an_event_loop() -> None:
    """Mangum runs each invocation on the thread's current event loop, which Lambda's
    runtime does not set; asking for one without it is deprecated."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_event_loop()
        except RuntimeError:
            loop = None
    if loop is None or loop.is_closed():
        asyncio.set_event_loop(asyncio.new_event_loop())


def gateway(event: LambdaEvent, context: LambdaContext) -> dict[str, Any]:
    """The gateway's Lambda handler (the services' URLs are ``AUTH_URL``, ...)."""
    return handler_for("gateway")(event, context)


def auth(event: LambdaEvent, context: LambdaContext) -> dict[str, Any]:
    """The auth service's Lambda handler."""
    return handler_for("auth")(event, context)


def users(event: LambdaEvent, context: LambdaContext) -> dict[str, Any]:
    """The users service's Lambda handler."""
    return handler_for("users")(event, context)


def products(event: LambdaEvent, context: LambdaContext) -> dict[str, Any]:
    """The products service's Lambda handler."""
    return handler_for("products")(event, context)


def orders(event: LambdaEvent, context: LambdaContext) -> dict[str, Any]:
    """The orders service's Lambda handler."""
    return handler_for("orders")(event, context)
