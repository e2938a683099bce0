"""The transactional outbox: :meth:`Outbox.publish` adds a row to the caller's transaction,
and the :class:`OutboxRelay` sends committed rows to the broker, in order of creation.

The relay is woken right after a commit that published something, and polls as a safety
net. It marks a row sent only after the broker confirmed it (memory: once every consumer
group handled it). On PostgreSQL several relays share the table with
``SELECT ... FOR UPDATE SKIP LOCKED``; on SQLite one relay per file sends, guarded by a file
lock next to the database (and a lock per process).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, cast

from opentelemetry.trace import Tracer
from sqlalchemy import delete, func, insert, select, update

from mercato.messaging.brokers import Broker, BrokerUnavailable, OutgoingMessage, Settled
from mercato.messaging.envelope import Envelope
from mercato.messaging.events import EventData
from mercato.messaging.metrics import MessagingMetrics
from mercato.messaging.tables import inbox, outbox
from mercato.messaging.tracing import MESSAGE_ID, creating, sending
from mercato.platform.db import Database, UnitOfWork
from mercato.platform.logging import get_logger
from mercato.platform.middleware import request_id_var
from mercato.platform.shutdown import bounded, pause, time_left, wait_ended
from mercato.platform.tracing import current_traceparent

log = get_logger("mercato.messaging.outbox")


class Outbox:
    """A service's publisher, built in its composition root with the service's name (the
    envelopes' ``source``) and handed to the use cases that announce events. The service's
    :class:`OutboxRelay` attaches itself while it runs, so that a commit wakes it at once;
    without one (a CLI command) the rows wait for the service's next relay."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.relay: OutboxRelay | None = None

    async def publish(
        self, uow: UnitOfWork, event: EventData, *, key: str | None = None
    ) -> Envelope[Any]:
        """Announce ``event`` with the transaction of ``uow``: it is sent after
        ``uow.commit()`` and never if the transaction rolls back. ``key`` keeps one
        aggregate's events in order (Kafka partition). Returns the envelope, with
        ``source``, ``request_id`` and ``traceparent`` (with tracing on, its create span's)
        filled."""
        envelope_type: type[Envelope[Any]] = cast(Any, Envelope)[type(event)]
        relay = self.relay
        tracer = relay.tracer if relay is not None else None
        with creating(tracer, event.event_type, relay.broker.name if relay else "") as span:
            envelope = envelope_type(
                type=event.event_type,
                source=self.source,
                request_id=request_id_var.get(),
                traceparent=current_traceparent(),
                data=event,
            )
            if span is not None:
                span.set_attribute(MESSAGE_ID, envelope.id)
            await uow.session.execute(insert(outbox).values(**_row(envelope, key)))
        uow.after_commit(self._wake_relay)
        return envelope

    def _wake_relay(self) -> None:
        if self.relay is not None:
            self.relay.wake()


def _row(envelope: Envelope[Any], key: str | None, target: str | None = None) -> dict[str, Any]:
    return {
        "event_id": envelope.id,
        "event_type": envelope.type,
        "partition_key": key,
        "target": target,
        "payload": envelope.model_dump_json(),
        "created_at": envelope.occurred_at,
    }


def _trace_headers(payload: str) -> dict[str, str]:
    """The envelope's request id and traceparent, copied into broker headers for tools
    that look at headers only (the envelope stays the source of truth)."""
    try:
        envelope = json.loads(payload)
    except ValueError:
        return {}
    if not isinstance(envelope, dict):
        return {}
    headers = {}
    for field, header in (("request_id", "x-request-id"), ("traceparent", "traceparent")):
        value = envelope.get(field)
        if isinstance(value, str) and value:
            headers[header] = value
    return headers


class _FileLock:
    """An exclusive, non-blocking lock on a file next to an SQLite database."""

    def __init__(self, database: Database) -> None:
        name = database.url.database or ""
        self.path = None if name in {"", ":memory:"} else Path(f"{name}.relay-lock")
        self._file: IO[bytes] | None = None

    def acquire(self) -> bool:
        if self.path is None or self._file is not None:
            return True
        handle = open(self.path, "ab")  # noqa: SIM115 - held open while we own the lock
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._file = handle
        return True

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class OutboxRelay:
    """Sends one database's committed outbox rows to the broker."""

    def __init__(
        self,
        database: Database,
        broker: Broker,
        *,
        service: str,
        metrics: MessagingMetrics | None = None,
        batch_size: int = 200,
        poll_interval: float = 1.0,
        retention: float = 7 * 86_400.0,
        inbox_retention: float = 30 * 86_400.0,
        max_backoff: float = 5.0,
        tracer: Tracer | None = None,
    ) -> None:
        self.database, self.broker, self.service = database, broker, service
        self.metrics = metrics
        #: Spans of what it sends, and of what its outbox publishes (None: tracing off).
        self.tracer = tracer
        self.batch_size, self.poll_interval = batch_size, poll_interval
        self.retention, self.max_backoff = retention, max_backoff
        self.inbox_retention = inbox_retention
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._file_lock = _FileLock(database) if database.is_sqlite else None
        #: When a row counts as sent: the one place the broker's kind matters to the relay.
        self.sent_when: _SentWhen = (
            _SentWhenSettled(self.wake, 4 * batch_size)
            if broker.settles_on_delivery
            else _SentWhenConfirmed()
        )
        self._last_prune = 0.0
        self._last_gauge = 0.0

    # --- life cycle --------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.service}")

    async def stop(self, *, flush_timeout: float = 5.0) -> None:
        """Stop the loop, then try once more to send what is committed (graceful shutdown);
        returns within about ``flush_timeout`` seconds whatever the database and broker do."""
        deadline = asyncio.get_running_loop().time() + flush_timeout
        self._stopping.set()
        self._wake.set()
        if self._task is not None:
            await wait_ended(
                [self._task], within=flush_timeout, what=f"the {self.service} outbox relay"
            )
            self._task = None
        await bounded(
            self.run_once(),
            within=time_left(deadline),
            what=f"the last send of the {self.service} outbox",
        )
        if self._file_lock is not None:
            self._file_lock.release()

    def wake(self) -> None:
        self._wake.set()

    def backoff(self, failures: int) -> float:
        """The pause after ``failures`` failed passes in a row: doubling from the poll
        interval up to ``max_backoff``, with jitter so that relays do not retry in step."""
        delay = min(self.poll_interval * 2.0 ** min(failures, 10), self.max_backoff)
        return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not secrecy

    async def _run(self) -> None:
        failures, broker_down = 0, False
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            try:
                sent = await self.run_once()
                if failures:
                    log.info("outbox relay publishing again", service=self.service)
                failures = 0
                now = loop.time()
                if now - self._last_gauge >= self.poll_interval:
                    self._last_gauge = now
                    await self.update_gauges()
                if now - self._last_prune >= max(self.poll_interval * 60, 60.0):
                    self._last_prune = now
                    await self.prune()
            except Exception as exc:
                failures += 1
                sent = 0
                broker_down = isinstance(exc, BrokerUnavailable)
                if failures == 1 or failures % 20 == 0:
                    log.warning(
                        "outbox relay could not publish; will retry",
                        service=self.service,
                        error=f"{type(exc).__name__}: {exc}",
                        failures=failures,
                    )
            if sent >= self.batch_size:
                continue  # more is waiting
            if failures:
                # Back off. A broker that did not confirm gets its backoff whatever commits
                # happen meanwhile; a database that failed is proven back by a commit that
                # wakes the relay, so the backlog drains at once instead of after the pause.
                self._wake.clear()
                await pause(self.backoff(failures), self._stopping if broker_down else self._wake)
                continue
            await pause(self.poll_interval, self._wake)
            self._wake.clear()

    # --- one pass ----------------------------------------------------------------------

    async def run_once(self) -> int:
        """Send one batch of committed rows; return how many the broker confirmed."""
        await self._mark_settled()
        if self._file_lock is not None and not self._file_lock.acquire():
            return 0  # another process owns this SQLite file's relay
        if self.database.is_postgres:
            return await self._send_locked()
        return await self._send_serial()

    async def _send_locked(self) -> int:
        """PostgreSQL: lock a batch (skipping rows other relays hold) for the publish."""
        if self.sent_when.backed_up():
            return 0
        async with self.database.unit_of_work() as uow:
            rows = (
                await uow.session.execute(self._pending_query().with_for_update(skip_locked=True))
            ).all()
            if not rows:
                return 0
            messages = [self._message(row) for row in rows]
            if sent := await self._hand_over(messages, holding=uow):
                await self._mark_sent(uow, sent)
            await uow.commit()
        self._count(messages)
        return len(messages)

    async def _send_serial(self) -> int:
        """SQLite: read, publish, then mark, in short transactions (one relay per file)."""
        if self.sent_when.backed_up():
            return 0
        async with self.database.unit_of_work(read_only=True) as uow:
            rows = (await uow.session.execute(self._pending_query())).all()
        if not rows:
            return 0
        messages = [self._message(row) for row in rows]
        if sent := await self._hand_over(messages):
            async with self.database.unit_of_work() as uow:
                await self._mark_sent(uow, sent)
                await uow.commit()
        self._count(messages)
        return len(messages)

    def _pending_query(self) -> Any:
        query = select(
            outbox.c.seq,
            outbox.c.event_id,
            outbox.c.event_type,
            outbox.c.partition_key,
            outbox.c.target,
            outbox.c.payload,
        ).where(outbox.c.sent_at.is_(None))
        if handed := self.sent_when.handed_over():
            query = query.where(outbox.c.seq.not_in(sorted(handed)))
        return query.order_by(outbox.c.seq).limit(self.batch_size)

    @staticmethod
    def _message(row: Any) -> OutgoingMessage:
        return OutgoingMessage(
            ref=row.seq,
            event_id=row.event_id,
            event_type=row.event_type,
            body=row.payload.encode(),
            key=row.partition_key,
            target=row.target,
            headers=_trace_headers(row.payload),
        )

    async def _hand_over(
        self, messages: Sequence[OutgoingMessage], *, holding: UnitOfWork | None = None
    ) -> list[int]:
        """Publish ``messages``; answer the refs to mark sent now. On a broker outage the
        failure is counted on the rows (after ``holding``, the transaction that locked them,
        is rolled back to release them) and :class:`BrokerUnavailable` raised."""
        try:
            await self._publish(messages)
        except BrokerUnavailable as exc:
            if holding is not None:
                await holding.rollback()
            await self._record_failure(messages, exc)
            raise
        return self.sent_when.published([m.ref for m in messages])

    async def _publish(self, messages: Sequence[OutgoingMessage]) -> None:
        try:
            with sending(self.tracer, messages, self.broker.name):
                await self.broker.publish(messages, self.sent_when.on_settled)
        except BrokerUnavailable:
            raise
        except Exception as exc:  # any client error means "not confirmed"
            raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def _count(self, messages: Sequence[OutgoingMessage]) -> None:
        if self.metrics is not None:
            for message in messages:
                self.metrics.published.labels(self.service, message.event_type).inc()

    async def _record_failure(self, messages: Sequence[OutgoingMessage], exc: Exception) -> None:
        if self.metrics is not None:
            self.metrics.publish_failures.labels(self.service).inc()
        with contextlib.suppress(Exception):
            async with self.database.unit_of_work() as uow:
                await uow.session.execute(
                    update(outbox)
                    .where(outbox.c.seq.in_([m.ref for m in messages]))
                    .values(attempts=outbox.c.attempts + 1, last_error=str(exc)[:500])
                )
                await uow.commit()

    @staticmethod
    async def _mark_sent(uow: UnitOfWork, refs: Sequence[int]) -> None:
        await uow.session.execute(
            update(outbox).where(outbox.c.seq.in_(refs)).values(sent_at=datetime.now(UTC))
        )

    async def _mark_settled(self) -> None:
        refs = self.sent_when.take_settled()
        if not refs:
            return
        try:
            async with self.database.unit_of_work() as uow:
                await self._mark_sent(uow, refs)
                await uow.commit()
        except Exception:
            self.sent_when.settle_failed(refs)
            raise
        self.sent_when.marked(refs)

    # --- housekeeping ------------------------------------------------------------------

    async def backlog(self) -> tuple[int, float]:
        """Unsent rows and the age in seconds of the oldest one (0 when none)."""
        async with self.database.unit_of_work(read_only=True) as uow:
            row = (
                await uow.session.execute(
                    select(func.count(), func.min(outbox.c.created_at)).where(
                        outbox.c.sent_at.is_(None)
                    )
                )
            ).one()
        count, oldest = int(row[0]), row[1]
        if oldest is None:
            return count, 0.0
        if oldest.tzinfo is None:  # SQLite returns naive datetimes
            oldest = oldest.replace(tzinfo=UTC)
        return count, max((datetime.now(UTC) - oldest).total_seconds(), 0.0)

    async def update_gauges(self) -> None:
        if self.metrics is None:
            return
        count, age = await self.backlog()
        self.metrics.outbox_backlog.labels(self.service).set(count)
        self.metrics.outbox_oldest_age.labels(self.service).set(age)

    async def prune(self) -> int:
        """Delete outbox rows sent longer ago than the retention, and inbox rows older than
        the inbox retention (the window in which a redelivery is recognised); return how
        many rows went."""
        now = datetime.now(UTC)
        sent_before = now - timedelta(seconds=self.retention)
        handled_before = now - timedelta(seconds=self.inbox_retention)
        async with self.database.unit_of_work() as uow:
            sent: Any = await uow.session.execute(
                delete(outbox).where(outbox.c.sent_at.is_not(None), outbox.c.sent_at < sent_before)
            )
            handled: Any = await uow.session.execute(
                delete(inbox).where(inbox.c.handled_at < handled_before)
            )
            await uow.commit()
        return int(sent.rowcount or 0) + int(handled.rowcount or 0)


# --- when a row counts as sent ---------------------------------------------------------


class _SentWhen:
    """When the relay marks a row sent, by the broker's kind (chosen once, at construction).

    The default is a broker that confirms what it took (RabbitMQ, Kafka): a confirmed
    publish is sent, and is marked in the same pass."""

    #: The callback the broker calls with each ref once every group settled it (or None).
    on_settled: Settled | None = None

    def published(self, refs: Sequence[int]) -> list[int]:
        """The rows the broker just confirmed; returns those to mark sent now."""
        return list(refs)

    def handed_over(self) -> set[int]:
        """Rows the broker holds that are not marked sent yet (left out of the next pass)."""
        return set()

    def backed_up(self) -> bool:
        """Whether the broker holds enough unsettled rows to wait before sending more."""
        return False

    def take_settled(self) -> list[int]:
        """Rows settled since the last pass, to mark sent now (then :meth:`marked`, or
        :meth:`settle_failed` when the marking failed)."""
        return []

    def marked(self, refs: Sequence[int]) -> None:
        """The settled ``refs`` are marked sent."""

    def settle_failed(self, refs: Sequence[int]) -> None:
        """Marking the settled ``refs`` failed: they are taken again next pass."""


class _SentWhenConfirmed(_SentWhen):
    """A broker that confirms what it took (RabbitMQ, Kafka)."""


class _SentWhenSettled(_SentWhen):
    """A broker that keeps nothing past the process (memory): a row counts as sent only
    once every consumer group has settled it, so a crash before then sends it again.

    Rows handed to the broker and not yet marked sent are never handed twice; those every
    group has settled are marked sent next pass. Tracked by seq, not by a high-water mark:
    on PostgreSQL a transaction holding a lower seq may commit after one holding a higher
    seq, and must still be sent."""

    def __init__(self, wake: Callable[[], None], max_in_flight: int) -> None:
        self.wake, self.max_in_flight = wake, max_in_flight
        self.in_flight: set[int] = set()
        self.settled: set[int] = set()
        self.on_settled = self._on_settled

    def _on_settled(self, ref: int) -> None:
        self.settled.add(ref)
        self.wake()

    def published(self, refs: Sequence[int]) -> list[int]:
        self.in_flight.update(refs)
        return []

    def handed_over(self) -> set[int]:
        return self.in_flight

    def backed_up(self) -> bool:
        # Enough is in the groups' queues; send more once some settled (a settle wakes the
        # relay). Bounds the process's memory and the pending query.
        return len(self.in_flight) >= self.max_in_flight

    def take_settled(self) -> list[int]:
        refs, self.settled = sorted(self.settled), set()
        return refs

    def marked(self, refs: Sequence[int]) -> None:
        self.in_flight.difference_update(refs)

    def settle_failed(self, refs: Sequence[int]) -> None:
        self.settled.update(refs)
