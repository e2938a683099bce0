"""A circuit breaker for calls to another service.

A :class:`CircuitBreaker` guards one upstream (one base URL, or one service). It is
**closed** while calls succeed; after ``failure_threshold`` consecutive failures it
**opens** and refuses calls at once with :class:`CircuitOpenError` (a 503
``ServiceUnavailable`` with ``Retry-After``), so a dead upstream costs nothing and gets time to
recover. After ``reset_timeout`` seconds it lets one trial call through (**half-open**): its
success closes the breaker, its failure re-opens it.

A caller takes a :class:`Permit` and resolves it with what the call told about the
upstream, so that a 5xx answer can count as a failure and a 404 as a success::

    permit = breaker.acquire()  # CircuitOpenError at once when open
    try:
        response = await session.get(url)
    except asyncio.CancelledError:
        permit.release()  # says nothing about the upstream
        raise
    except aiohttp.ClientError:
        permit.failure()
        raise
    if response.status >= 500:
        permit.failure()
    else:
        permit.success()

A permit that is never resolved holds the half-open trial slot; resolve it with
``success()``, ``failure()`` or ``release()``. Outcomes of calls that started before the
breaker last changed state are ignored, so a slow call that began while closed cannot close
a breaker that opened meanwhile.

The breaker is not thread-safe; it is meant for one event loop (every method is synchronous
and never awaits, so no lock is needed). Observe it through :attr:`CircuitBreaker.state`,
:attr:`CircuitBreaker.state_code` (a number for a gauge: 0 closed, 1 half-open, 2 open) and
state listeners (:meth:`CircuitBreaker.add_listener`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from enum import StrEnum

from mercato.platform.errors import ServiceUnavailable


class BreakerState(StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


#: Numeric value of each state, for a Prometheus gauge.
STATE_CODES: dict[BreakerState, int] = {
    BreakerState.CLOSED: 0,
    BreakerState.HALF_OPEN: 1,
    BreakerState.OPEN: 2,
}

StateListener = Callable[["CircuitBreaker", BreakerState, BreakerState], None]
"""Called with ``(breaker, old_state, new_state)`` on every transition."""


class CircuitOpenError(ServiceUnavailable):
    """Refused without calling: the breaker of ``name`` is open (or its one trial call is out)."""

    slug = "circuit-open"

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(
            f"{name} is unavailable; try again shortly.", dependency="upstream service"
        )
        self.name = name
        self.retry_after = retry_after
        # Instance attribute shadows the class-level default so the handler sends the real wait.
        self.headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}  # type: ignore[misc]


class Permit:
    """Leave to make one call; resolve it exactly once (later calls are ignored)."""

    __slots__ = ("_breaker", "_done", "_generation", "_trial")

    def __init__(self, breaker: CircuitBreaker, generation: int, trial: bool) -> None:
        self._breaker = breaker
        self._generation = generation
        self._trial = trial
        self._done = False

    def success(self) -> None:
        """The call worked."""
        if not self._done:
            self._done = True
            self._breaker._on_success(self._generation, self._trial)

    def failure(self) -> None:
        """The call failed in a way that says the upstream is unhealthy."""
        if not self._done:
            self._done = True
            self._breaker._on_failure(self._generation, self._trial)

    def release(self) -> None:
        """The call ended without telling anything about the upstream's health."""
        if not self._done:
            self._done = True
            self._breaker._on_release(self._generation, self._trial)


class CircuitBreaker:
    """Closed / open / half-open breaker for one upstream; see the module docstring."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if not (math.isfinite(reset_timeout) and reset_timeout > 0):
            raise ValueError("reset_timeout must be a positive number of seconds")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self._listeners: list[StateListener] = []
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._failures = 0
        self._opened_at = 0.0
        self._trial_out = False

    # -- observation -------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose timeout passed reads as half-open."""
        self._maybe_half_open()
        return self._state

    @property
    def state_code(self) -> int:
        """0 closed, 1 half-open, 2 open (for a gauge)."""
        return STATE_CODES[self.state]

    def retry_after(self) -> float:
        """Seconds until an open breaker lets a trial through (0 unless open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.reset_timeout - self._clock())

    def add_listener(self, listener: StateListener) -> None:
        """Also call ``listener(breaker, old, new)`` on every transition."""
        self._listeners.append(listener)

    # -- use ---------------------------------------------------------------------------

    def acquire(self) -> Permit:
        """Permission for one call, or :class:`CircuitOpenError` at once."""
        if self._state is BreakerState.CLOSED:  # the common case: no clock to read
            return Permit(self, self._generation, trial=False)
        state = self.state
        if state is BreakerState.CLOSED:
            return Permit(self, self._generation, trial=False)
        if state is BreakerState.HALF_OPEN and not self._trial_out:
            self._trial_out = True
            return Permit(self, self._generation, trial=True)
        raise CircuitOpenError(self.name, self.retry_after() or self.reset_timeout)

    def reset(self) -> None:
        """Close the breaker and forget its failures (for operators and tests)."""
        self._transition(BreakerState.CLOSED)

    # -- internals ---------------------------------------------------------------------

    def _maybe_half_open(self) -> None:
        if (
            self._state is BreakerState.OPEN
            and self._clock() >= self._opened_at + self.reset_timeout
        ):
            self._transition(BreakerState.HALF_OPEN)

    def _transition(self, new: BreakerState) -> None:
        old = self._state
        self._state = new
        self._generation += 1
        self._failures = 0
        self._trial_out = False
        if new is BreakerState.OPEN:
            self._opened_at = self._clock()
        if old is not new:
            for listener in list(self._listeners):
                listener(self, old, new)

    def _on_success(self, generation: int, trial: bool) -> None:
        if generation != self._generation:
            return
        if trial:
            self._transition(BreakerState.CLOSED)
        else:
            self._failures = 0

    def _on_failure(self, generation: int, trial: bool) -> None:
        if generation != self._generation:
            return
        if trial:
            self._transition(BreakerState.OPEN)
            return
        self._failures += 1
        if self._failures >= self.failure_threshold:
            self._transition(BreakerState.OPEN)

    def _on_release(self, generation: int, trial: bool) -> None:
        if generation == self._generation and trial:
            self._trial_out = False

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self.state.value})"
