"""A clock a test moves by hand, for code that takes ``clock: Callable[[], float]``.

::

    clock = FakeClock()
    breaker = CircuitBreaker("up", reset_timeout=10.0, clock=clock)
    clock.now += 10  # the reset timeout has passed, without sleeping
"""

from __future__ import annotations


class FakeClock:
    """Reads ``now`` (monotonic seconds); time passes only when a test adds to it."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
