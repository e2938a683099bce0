"""Idempotent consumers: ``Handlers`` declares what a service handles; ``Consumer`` runs them.

Each delivery is handled in one unit of work that also records ``(consumer, event id)`` in
the inbox; the runner commits, then acks. An id already in the inbox is acked and skipped.
A handler that raises is retried with exponential backoff, and dead-lettered after
``MESSAGING_MAX_ATTEMPTS``. A message that is not an envelope, or of a type this service
does not handle, or whose data does not validate, goes straight to the dead letters.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from mercato.messaging.brokers import Broker, Delivery, Subscription
from mercato.messaging.envelope import (
    Envelope,
    MalformedMessage,
    RawEnvelope,
    parse_raw,
    traceparent_var,
    typed,
)
from mercato.messaging.events import EventData
from mercato.messaging.metrics import MessagingMetrics
from mercato.messaging.tables import dead_letters, inbox
from mercato.platform.db import Database, UnitOfWork
from mercato.platform.logging import get_logger
from mercato.platform.middleware import request_id_var

log = get_logger("mercato.messaging.consumer")

E = TypeVar("E", bound=EventData)
Handler = Callable[[Envelope[Any], UnitOfWork], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Route:
    data_type: type[EventData]
    handlers: tuple[Handler, ...]


class Handlers:
    """The event handlers of one service, which form one consumer group (queue)."""

    def __init__(self, consumer: str) -> None:
        self.consumer = consumer
        self._routes: dict[str, _Route] = {}

    def on(
        self, event: type[E]
    ) -> Callable[
        [Callable[[Envelope[E], UnitOfWork], Awaitable[None]]],
        Callable[[Envelope[E], UnitOfWork], Awaitable[None]],
    ]:
        """Register the decorated coroutine for ``event``; it must not commit."""

        def register(
            handler: Callable[[Envelope[E], UnitOfWork], Awaitable[None]],
        ) -> Callable[[Envelope[E], UnitOfWork], Awaitable[None]]:
            route = self._routes.get(event.event_type)
            if route is not None and route.data_type is not event:
                raise ValueError(f"{event.event_type} is already handled as {route.data_type}")
            previous = route.handlers if route else ()
            self._routes[event.event_type] = _Route(event, (*previous, handler))
            return handler

        return register

    @property
    def event_types(self) -> list[str]:
        return sorted(self._routes)

    def route(self, event_type: str) -> _Route | None:
        return self._routes.get(event_type)


def backoff(attempt: int, *, base: float, cap: float) -> float:
    """Delay before delivery ``attempt + 1``: base, 2*base, 4*base... at most ``cap``."""
    return float(min(base * 2 ** max(attempt - 1, 0), cap))


class Consumer:
    """Runs one service's :class:`Handlers` against a broker and the service's database."""

    def __init__(
        self,
        handlers: Handlers,
        database: Database,
        broker: Broker,
        *,
        service: str,
        metrics: MessagingMetrics | None = None,
        max_attempts: int = 5,
        retry_backoff: float = 0.5,
        retry_backoff_max: float = 30.0,
        prefetch: int = 16,
    ) -> None:
        self.handlers, self.database, self.broker = handlers, database, broker
        self.service, self.metrics = service, metrics
        self.max_attempts = max_attempts
        self.retry_backoff, self.retry_backoff_max = retry_backoff, retry_backoff_max
        self.prefetch = prefetch
        self.subscription: Subscription | None = None

    @property
    def group(self) -> str:
        return self.handlers.consumer

    async def start(self) -> None:
        self.subscription = await self.broker.subscribe(
            self.group, self.handlers.event_types, self.handle, prefetch=self.prefetch
        )

    async def stop(self, grace: float = 10.0) -> None:
        if self.subscription is not None:
            await self.subscription.stop(grace)
            self.subscription = None

    async def pending(self) -> int:
        return await self.subscription.pending() if self.subscription else 0

    # --- one delivery ------------------------------------------------------------------

    async def handle(self, delivery: Delivery) -> None:
        """Handle one delivery and settle it (ack, retry or dead letter); never raises."""
        try:
            raw = parse_raw(delivery.body)
        except MalformedMessage as exc:
            await self._dead_letter(delivery, None, str(exc))
            return
        if delivery.target is not None and delivery.target != self.group:
            await delivery.ack()  # a replay addressed to another group
            return
        route = self.handlers.route(raw.type)
        if route is None:
            await self._dead_letter(delivery, raw, f"no handler for {raw.type!r}")
            return
        try:
            envelope = typed(raw, route.data_type)
        except MalformedMessage as exc:
            await self._dead_letter(delivery, raw, str(exc))
            return
        request_token = request_id_var.set(raw.request_id)
        trace_token = traceparent_var.set(raw.traceparent)
        started = time.perf_counter()
        try:
            with structlog.contextvars.bound_contextvars(
                request_id=raw.request_id,
                traceparent=raw.traceparent,
                event_id=raw.id,
                event_type=raw.type,
                consumer=self.group,
            ):
                await self._handle_typed(delivery, envelope, route)
        finally:
            request_id_var.reset(request_token)
            traceparent_var.reset(trace_token)
            if self.metrics is not None:
                self.metrics.handler_latency.labels(self.service, self.group, raw.type).observe(
                    time.perf_counter() - started
                )

    async def _handle_typed(
        self, delivery: Delivery, envelope: Envelope[Any], route: _Route
    ) -> None:
        outcome = "handled"
        try:
            async with self.database.unit_of_work() as uow:
                if await self._seen(uow, envelope.id):
                    outcome = "duplicate"
                else:
                    for handler in route.handlers:
                        await handler(envelope, uow)
                    await uow.session.execute(
                        insert(inbox).values(
                            consumer=self.group,
                            event_id=envelope.id,
                            event_type=envelope.type,
                            handled_at=datetime.now(UTC),
                        )
                    )
                    await uow.commit()
        except IntegrityError as exc:
            if not await self._seen_now(envelope.id):
                await self._failed(delivery, envelope, exc)
                return
            outcome = "duplicate"  # handled concurrently by another delivery
        except Exception as exc:
            await self._failed(delivery, envelope, exc)
            return
        await delivery.ack()
        if outcome == "duplicate":
            log.info("duplicate event skipped")
        if self.metrics is not None:
            self.metrics.consumed.labels(self.service, self.group, envelope.type, outcome).inc()

    async def _seen(self, uow: UnitOfWork, event_id: str) -> bool:
        found = await uow.session.execute(
            select(inbox.c.event_id).where(
                inbox.c.consumer == self.group, inbox.c.event_id == event_id
            )
        )
        return found.first() is not None

    async def _seen_now(self, event_id: str) -> bool:
        async with self.database.unit_of_work(read_only=True) as uow:
            return await self._seen(uow, event_id)

    async def _failed(self, delivery: Delivery, envelope: Envelope[Any], exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        if delivery.attempt >= self.max_attempts:
            log.error("handler failed; dead-lettering", attempt=delivery.attempt, error=reason)
            raw = RawEnvelope.model_validate_json(delivery.body)
            await self._dead_letter(delivery, raw, reason)
            return
        delay = backoff(delivery.attempt, base=self.retry_backoff, cap=self.retry_backoff_max)
        log.warning(
            "handler failed; will retry", attempt=delivery.attempt, delay=delay, error=reason
        )
        await delivery.retry(delay)
        if self.metrics is not None:
            self.metrics.retried.labels(self.service, self.group, envelope.type).inc()

    async def _dead_letter(self, delivery: Delivery, raw: RawEnvelope | None, reason: str) -> None:
        """Record the dead letter in this service's database (for `mercato events dlq`), then
        hand the message to the broker's dead-letter queue."""
        event_type = raw.type if raw else "<malformed>"
        try:
            async with self.database.unit_of_work() as uow:
                await uow.session.execute(
                    insert(dead_letters).values(
                        consumer=self.group,
                        event_id=raw.id if raw else "",
                        event_type=event_type,
                        payload=delivery.body.decode("utf-8", errors="replace"),
                        error=reason[:2000],
                        attempts=delivery.attempt,
                        dead_at=datetime.now(UTC),
                    )
                )
                await uow.commit()
        except Exception:
            log.exception("could not record a dead letter; it stays in the broker's DLQ")
        await delivery.dead_letter(reason)
        log.warning("event dead-lettered", event_type=event_type, reason=reason)
        if self.metrics is not None:
            self.metrics.dead_lettered.labels(self.service, self.group, event_type).inc()
