"""Idempotent consumers: ``Handlers`` declares what a service handles; ``Consumer`` runs them.

Each delivery is handled in a unit of work that also records ``(consumer, event id)`` in
the inbox; the runner commits, then acks. An id already in the inbox is acked and skipped.
On SQLite, deliveries that arrive while a transaction is busy share the next (group commit: one
inbox look-up, one insert and one commit for the lot), each handler in a savepoint of its
own, so that one message's failure undoes only its own work; a message is acked only
after the commit that recorded it.

A failure is either the message's or a dependency's (:func:`is_transient`):

- a dependency unavailable (database, cache, broker, an upstream answering 503) *pauses*
  the consumer: the delivery is held and tried again, and the others wait their turn, one
  try at a time after a capped, jittered backoff, for as long as it takes. No attempt is
  counted and nothing is dead-lettered; it resumes by itself. ``paused`` tells, as do a
  log warning, the ``messaging_consumer_paused`` gauge and the ``consumers`` check of
  ``/readyz``;
- a handler that raises otherwise is retried with exponential backoff, and dead-lettered
  after ``MESSAGING_MAX_ATTEMPTS``. A message that is not an envelope, or of a type this
  service does not handle, or whose data does not validate, goes straight to the dead
  letters.

A dead letter is recorded in the service's database before the broker is told; while that
cannot be done the message is held (or given back), never dropped.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from opentelemetry.trace import Tracer
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
from mercato.messaging.tracing import failed, processing
from mercato.messaging.transient import is_transient
from mercato.platform.db import Database, UnitOfWork
from mercato.platform.error_reporting import ErrorReporter
from mercato.platform.logging import get_logger
from mercato.platform.middleware import request_id_var
from mercato.platform.shutdown import pause

log = get_logger("mercato.messaging.consumer")

E = TypeVar("E", bound=EventData)
T = TypeVar("T")
Handler = Callable[[Envelope[Any], UnitOfWork], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Route:
    data_type: type[EventData]
    handlers: tuple[Handler, ...]


@dataclass(eq=False, slots=True)
class _Queued:
    """A delivery's typed envelope waiting for a shared transaction; ``context`` is its
    delivery's (request id, trace, log fields), which its handlers run in."""

    envelope: Envelope[Any]
    route: _Route
    context: contextvars.Context
    outcome: asyncio.Future[str]


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


#: While paused, a consumer logs again after this many failed tries.
LOG_EVERY = 20
#: The longest pause between two tries while a dependency is away: once it is back, the
#: backlog drains within this long.
PAUSE_BACKOFF_MAX = 5.0


class _Stopping(Exception):
    """The consumer stopped while its delivery waited for a dependency: give it back."""


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
        pause_backoff_max: float = PAUSE_BACKOFF_MAX,
        prefetch: int = 16,
        tracer: Tracer | None = None,
        errors: ErrorReporter | None = None,
    ) -> None:
        self.handlers, self.database, self.broker = handlers, database, broker
        self.service, self.metrics = service, metrics
        #: A consumer span per delivery (None: tracing off).
        self.tracer = tracer
        #: Told of every handler failure that is retried or dead-lettered (None: off).
        self.errors = errors
        self.max_attempts = max_attempts
        self.retry_backoff, self.retry_backoff_max = retry_backoff, retry_backoff_max
        self.pause_backoff_max = pause_backoff_max
        self.prefetch = prefetch
        self.subscription: Subscription | None = None
        self._stopping = asyncio.Event()
        self._turn = asyncio.Lock()  # while paused: one try at a time
        self._paused_since: float | None = None
        self._pause_reason = ""
        self._failed_tries = 0
        #: SQLite (one writer anyway): deliveries queue for one task, which takes up to
        #: ``prefetch`` of them into each transaction. PostgreSQL: each delivery its own
        #: transaction; a batch would hold the rows its handlers lock (stock) until it commits.
        self.group_commit = database.is_sqlite
        self._queued: list[_Queued] = []
        self._lane: asyncio.Task[None] | None = None

    @property
    def group(self) -> str:
        return self.handlers.consumer

    @property
    def paused(self) -> bool:
        """True while a dependency is unavailable and this consumer's messages wait."""
        return self._paused_since is not None

    def pause_state(self) -> str | None:
        """Why and for how long this consumer is paused (no address); None when it is not."""
        if self._paused_since is None:
            return None
        seconds = time.monotonic() - self._paused_since
        return f"paused for {seconds:.0f} s: {self._pause_reason}"

    async def start(self) -> None:
        self._stopping.clear()
        self.subscription = await self.broker.subscribe(
            self.group, self.handlers.event_types, self.handle, prefetch=self.prefetch
        )

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking messages and finish those in flight within ``grace`` seconds; those
        waiting for a dependency are given back at once."""
        self._stopping.set()
        if self.subscription is not None:
            await self.subscription.stop(grace)
            self.subscription = None
        if (lane := self._lane) is not None:  # handlers the grace did not wait for
            lane.cancel()
            await asyncio.gather(lane, return_exceptions=True)

    async def pending(self) -> int:
        return await self.subscription.pending() if self.subscription else 0

    # --- one delivery ------------------------------------------------------------------

    async def handle(self, delivery: Delivery) -> None:
        """Handle one delivery and settle it (ack, retry, dead letter, or give it back when
        stopped while a dependency is away); never raises."""
        try:
            await self._handle(delivery)
        except _Stopping:
            await delivery.release()

    async def _handle(self, delivery: Delivery) -> None:
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
            with (
                processing(self.tracer, raw, self.group, self.broker.name, delivery.attempt),
                structlog.contextvars.bound_contextvars(
                    request_id=raw.request_id,
                    traceparent=raw.traceparent,
                    event_id=raw.id,
                    event_type=raw.type,
                    consumer=self.group,
                ),
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
        try:
            if self.group_commit:
                outcome = await self._in_shared_transaction(envelope, route)
            else:
                outcome = await self._until_done(lambda: self._apply(envelope, route))
        except _Stopping:
            raise
        except Exception as exc:
            await self._failed(delivery, envelope, exc)
            return
        await delivery.ack()
        if outcome == "duplicate":
            log.info("duplicate event skipped")
        if self.metrics is not None:
            self.metrics.consumed.labels(self.service, self.group, envelope.type, outcome).inc()

    # --- deliveries sharing a transaction ----------------------------------------------

    async def _in_shared_transaction(self, envelope: Envelope[Any], route: _Route) -> str:
        """Queue ``envelope`` for the next shared transaction; its outcome once committed
        ("handled", "duplicate"), or its handler's error. Raises :class:`_Stopping`."""
        item = _Queued(
            envelope, route, contextvars.copy_context(), asyncio.get_running_loop().create_future()
        )
        self._queued.append(item)
        if self._lane is None:
            self._lane = asyncio.create_task(self._drain(), name=f"consumer-{self.group}-lane")
        return await item.outcome

    async def _drain(self) -> None:
        """Take what is queued (up to the prefetch), handle it in one transaction and
        settle each item's outcome; until nothing is queued. The task is forgotten as soon
        as it finds the queue empty, so that the next delivery starts a new one."""
        try:
            while self._queued:
                batch = self._queued[: self.prefetch]
                del self._queued[: self.prefetch]
                await self._run_batch(batch)
        finally:
            self._lane = None

    async def _run_batch(self, batch: list[_Queued]) -> None:
        """Handle ``batch``, topped up from the queue before each try. While paused, each
        try takes the waiting deliveries one by one, each in its own transaction (as if
        unbatched): every one is tried, and those that went through are settled at once."""

        async def attempt() -> list[str | Exception]:
            room = self.prefetch - len(batch)
            batch.extend(self._queued[:room])
            del self._queued[:room]
            if not self.paused:
                return await self._apply_batch(batch)
            transient: Exception | None = None
            for item in list(batch):
                try:
                    outcome = await self._one(item)
                except Exception as exc:
                    transient = exc
                    continue
                batch.remove(item)
                _settle(item, outcome)
            if transient is not None:
                raise transient
            return []

        try:
            outcomes = await self._until_done(attempt)
        except Exception as exc:
            for item in batch:
                _settle(item, exc)
            return
        except BaseException:
            for item in batch:
                _settle(item, None)  # cancelled: the stop gave up on these
            raise
        for item, outcome in zip(batch, outcomes, strict=True):
            _settle(item, outcome)

    async def _apply_batch(self, batch: list[_Queued]) -> list[str | Exception]:
        """Run the handlers of ``batch`` and record the handled in the inbox, in one
        transaction: each message's handlers in a savepoint (when there are several), a
        failure undoing only that message's work. A transient failure undoes the lot (the
        caller pauses and tries again); an inbox row another transaction committed
        meanwhile sends each message through a transaction of its own."""
        if len(batch) == 1:
            return [await self._one(batch[0])]
        outcomes: list[str | Exception] = []
        try:
            async with self.database.unit_of_work() as uow:
                seen = await self._seen_many(uow, {item.envelope.id for item in batch})
                rows = []
                for item in batch:
                    envelope = item.envelope
                    if envelope.id in seen:
                        outcomes.append("duplicate")
                        continue
                    try:
                        async with uow.savepoint():
                            await _run_in(
                                item.context, self._run_handlers(envelope, item.route, uow)
                            )
                    except Exception as exc:
                        if is_transient(exc):
                            raise
                        outcomes.append(exc)
                        continue
                    seen.add(envelope.id)
                    rows.append(self._inbox_row(envelope))
                    outcomes.append("handled")
                if rows:
                    await uow.session.execute(insert(inbox), rows)
                await uow.commit()
        except IntegrityError:
            return [await self._one(item) for item in batch]
        return outcomes

    async def _one(self, item: _Queued) -> str | Exception:
        """``item`` in a transaction of its own; a transient failure raises."""
        try:
            return await _run_in(item.context, self._apply(item.envelope, item.route))
        except Exception as exc:
            if is_transient(exc):
                raise
            return exc

    async def _run_handlers(self, envelope: Envelope[Any], route: _Route, uow: UnitOfWork) -> None:
        for handler in route.handlers:
            await handler(envelope, uow)

    def _inbox_row(self, envelope: Envelope[Any]) -> dict[str, Any]:
        return {
            "consumer": self.group,
            "event_id": envelope.id,
            "event_type": envelope.type,
            "handled_at": datetime.now(UTC),
        }

    async def _seen_many(self, uow: UnitOfWork, event_ids: set[str]) -> set[str]:
        found = await uow.session.execute(
            select(inbox.c.event_id).where(
                inbox.c.consumer == self.group, inbox.c.event_id.in_(sorted(event_ids))
            )
        )
        return set(found.scalars())

    async def _apply(self, envelope: Envelope[Any], route: _Route) -> str:
        """Run the handlers and record the event in the inbox, in one transaction."""
        try:
            async with self.database.unit_of_work() as uow:
                if await self._seen(uow, envelope.id):
                    return "duplicate"
                await self._run_handlers(envelope, route, uow)
                await uow.session.execute(insert(inbox), [self._inbox_row(envelope)])
                await uow.commit()
        except IntegrityError:
            if not await self._seen_now(envelope.id):
                raise
            return "duplicate"  # handled concurrently by another delivery
        return "handled"

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

    # --- pausing while a dependency is away ----------------------------------------------

    async def _until_done(self, work: Callable[[], Awaitable[T]]) -> T:
        """``work()``, tried again for as long as it fails for a transient reason (paused
        meanwhile: one try at a time, after a capped, jittered backoff). Raises what it
        raised otherwise, or :class:`_Stopping` when the consumer stops while paused."""
        while True:
            if self._paused_since is not None:
                async with self._turn:
                    if self._paused_since is not None:
                        if await pause(self._pause_delay(), self._stopping):
                            raise _Stopping
                        done, value = await self._try(work)
                        if done:
                            return value  # type: ignore[return-value]
                        continue
            done, value = await self._try(work)
            if done:
                return value  # type: ignore[return-value]

    async def _try(self, work: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        try:
            value = await work()
        except Exception as exc:
            if not is_transient(exc):
                self._resume()  # the dependencies answered: the failure is the work's own
                raise
            self._pause(exc)
            return False, None
        self._resume()
        return True, value

    def _pause_delay(self) -> float:
        delay = backoff(self._failed_tries, base=self.retry_backoff, cap=self.pause_backoff_max)
        return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not secrecy

    def _pause(self, exc: Exception) -> None:
        self._pause_reason = f"{type(exc).__name__}: {exc}"[:300]
        self._failed_tries += 1
        if self._paused_since is None:
            self._paused_since = time.monotonic()
            log.warning(
                "consumer paused: a dependency is unavailable; its messages wait",
                service=self.service,
                consumer=self.group,
                error=self._pause_reason,
            )
            if self.metrics is not None:
                self.metrics.consumer_paused.labels(self.service, self.group).set(1)
        elif self._failed_tries % LOG_EVERY == 0:
            log.warning(
                "consumer still paused",
                service=self.service,
                consumer=self.group,
                tries=self._failed_tries,
                error=self._pause_reason,
            )

    def _resume(self) -> None:
        if self._paused_since is None:
            return
        log.info(
            "consumer resumed",
            service=self.service,
            consumer=self.group,
            paused_for=round(time.monotonic() - self._paused_since, 3),
            tries=self._failed_tries,
        )
        self._paused_since, self._failed_tries = None, 0
        if self.metrics is not None:
            self.metrics.consumer_paused.labels(self.service, self.group).set(0)

    # --- failures of the message itself --------------------------------------------------

    async def _failed(self, delivery: Delivery, envelope: Envelope[Any], exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        giving_up = delivery.attempt >= self.max_attempts
        failed(exc)
        if self.errors is not None:
            self.errors.capture(
                exc,
                level="error" if giving_up else "warning",
                event_type=envelope.type,
                event_id=envelope.id,
                consumer=self.group,
                attempt=delivery.attempt,
                outcome="dead_letter" if giving_up else "retry",
            )
        if giving_up:
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
        hand the message to the broker's dead-letter queue. While the record cannot be
        written the message is held (database away) or given back: never dropped."""
        event_type = raw.type if raw else "<malformed>"
        try:
            await self._until_done(lambda: self._record_dead_letter(delivery, raw, reason))
        except _Stopping:
            raise
        except Exception:
            log.exception("could not record a dead letter; the message comes back later")
            await delivery.retry(self.retry_backoff_max)
            return
        await delivery.dead_letter(reason)
        log.warning("event dead-lettered", event_type=event_type, reason=reason)
        if self.metrics is not None:
            # A type no handler knows came from outside the deployment's code: one label
            # for all of them, so a stray publisher cannot mint label values.
            known = raw is None or self.handlers.route(event_type) is not None
            label = event_type if known else "<unhandled>"
            self.metrics.dead_lettered.labels(self.service, self.group, label).inc()

    async def _record_dead_letter(
        self, delivery: Delivery, raw: RawEnvelope | None, reason: str
    ) -> None:
        async with self.database.unit_of_work() as uow:
            await uow.session.execute(
                insert(dead_letters).values(
                    consumer=self.group,
                    event_id=raw.id if raw else "",
                    event_type=raw.type if raw else "<malformed>",
                    payload=_text(delivery.body.decode("utf-8", errors="replace")),
                    error=_text(reason)[:2000],
                    attempts=delivery.attempt,
                    dead_at=datetime.now(UTC),
                )
            )
            await uow.commit()


def _settle(item: _Queued, outcome: str | Exception | None) -> None:
    """Hand ``item`` its outcome (None: cancel it), unless its delivery stopped waiting."""
    if item.outcome.done():
        return
    if outcome is None:
        item.outcome.cancel()
    elif isinstance(outcome, Exception):
        item.outcome.set_exception(outcome)
    else:
        item.outcome.set_result(outcome)


async def _run_in(context: contextvars.Context, work: Coroutine[Any, Any, T]) -> T:
    """Await ``work`` in ``context`` (a delivery's request id, trace and log fields)."""
    return await asyncio.create_task(work, context=context)


def _text(value: str) -> str:
    """``value`` storable in any text column (PostgreSQL refuses NUL characters)."""
    return value.replace("\x00", "\ufffd")
