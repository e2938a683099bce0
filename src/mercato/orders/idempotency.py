"""What ``Idempotency-Key`` on ``POST /orders`` keeps and gives back, apart from the
transactions (those are :class:`~mercato.orders.service.OrdersService`'s): the request's
fingerprint, the :class:`Answer` kept with a key, its replay, the 409 of a key in flight, the
policy's times, and the keys this process could not release."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from mercato.orders.domain import request_fingerprint
from mercato.orders.schemas import PlaceOrder
from mercato.platform.errors import (
    PROBLEM_JSON,
    AppError,
    Conflict,
    error_details,
    problem_json,
)
from mercato.platform.middleware import request_id_var

JSON: Final = "application/json"

#: Keys an outage left in flight that this process remembers to retake early.
MAX_UNRELEASED = 10_000


@dataclass(frozen=True, slots=True)
class IdempotencyPolicy:
    ttl: timedelta = timedelta(hours=24)
    lock_timeout: timedelta = timedelta(seconds=60)


class KeyInFlight(Conflict):
    """409: the first request with this Idempotency-Key has not finished yet."""

    slug = "idempotency-key-in-flight"
    headers = {"Retry-After": "1"}


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer kept as text, so that an idempotent retry gets the very same one."""

    status: int
    body: str
    replayed: bool = False

    @property
    def media_type(self) -> str:
        return PROBLEM_JSON if self.status >= 400 else JSON


def fingerprint_of(request: PlaceOrder) -> str:
    """The digest a key is bound to: the same order in any key order or spacing matches."""
    return request_fingerprint(request.model_dump(mode="json"))


def refusal(error: AppError) -> Answer:
    """The answer kept with a key for a 4xx about the order itself. Its problem body names
    no request (``request_id`` is null): :func:`replay` puts in the replaying one's."""
    return Answer(error.status, problem_json(error_details(error, request_id=None)).decode())


def replay(status: int, body: str) -> Answer:
    """The answer kept with a key, given again to the request being served. A problem carries
    that request's ``request_id`` (the first request's id belongs to the first answer)."""
    if status >= 400:
        problem = json.loads(body)
        problem["request_id"] = request_id_var.get()
        body = problem_json(problem).decode()
    return Answer(status, body, replayed=True)


class UnreleasedKeys:
    """Key rows whose request ended here but whose release failed (the database was down):
    nothing holds them, so a retry here takes them over at once instead of waiting out the
    lock timeout. Bounded by ``limit``; a key dropped from it waits the timeout."""

    def __init__(self, limit: int = MAX_UNRELEASED) -> None:
        self.limit = limit
        self._rows: set[int] = set()

    def __contains__(self, row_id: int) -> bool:
        return row_id in self._rows

    def add(self, row_id: int) -> None:
        if len(self._rows) >= self.limit:
            self._rows.pop()
        self._rows.add(row_id)

    def discard(self, row_id: int) -> None:
        self._rows.discard(row_id)
