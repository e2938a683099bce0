"""The circuit breaker: closed -> open -> half-open -> closed, driven by a fake clock."""

from __future__ import annotations

import pytest

from mercato.platform.errors import ServiceUnavailable
from mercato.platform.resilience import BreakerState, CircuitBreaker, CircuitOpenError
from support.clock import FakeClock


def make(clock: FakeClock, **kwargs: object) -> CircuitBreaker:
    options: dict[str, object] = {"failure_threshold": 3, "reset_timeout": 10.0, **kwargs}
    return CircuitBreaker("up", clock=clock, **options)  # type: ignore[arg-type]


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        breaker.acquire().failure()


def trip(breaker: CircuitBreaker) -> None:
    fail(breaker, breaker.failure_threshold)


def test_opens_after_threshold_consecutive_failures_and_refuses_at_once() -> None:
    breaker = make(FakeClock())
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    fail(breaker)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError) as info:
        breaker.acquire()
    assert isinstance(info.value, ServiceUnavailable)
    assert info.value.status == 503
    assert info.value.headers["Retry-After"] == "10"


def test_a_success_resets_the_consecutive_failure_count() -> None:
    breaker = make(FakeClock())
    fail(breaker, 2)
    breaker.acquire().success()
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    fail(breaker)
    assert breaker.state is BreakerState.OPEN


def test_half_open_after_timeout_then_a_trial_success_closes() -> None:
    clock = FakeClock()
    breaker = make(clock)
    trip(breaker)
    clock.now += 4
    assert breaker.retry_after() == pytest.approx(6)
    with pytest.raises(CircuitOpenError) as info:
        breaker.acquire()
    assert info.value.headers["Retry-After"] == "6"
    clock.now += 6
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.state_code == 1
    breaker.acquire().success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.state_code == 0


def test_a_trial_failure_reopens_for_a_full_timeout() -> None:
    clock = FakeClock()
    breaker = make(clock)
    trip(breaker)
    clock.now += 10
    fail(breaker)
    assert breaker.state is BreakerState.OPEN
    assert breaker.state_code == 2
    assert breaker.retry_after() == pytest.approx(10)


def test_half_open_lets_one_trial_through_at_a_time() -> None:
    clock = FakeClock()
    breaker = make(clock)
    trip(breaker)
    clock.now += 10
    trial = breaker.acquire()
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    trial.success()
    assert breaker.state is BreakerState.CLOSED


def test_a_released_trial_frees_its_slot_without_deciding() -> None:
    clock = FakeClock()
    breaker = make(clock)
    trip(breaker)
    clock.now += 10
    permit = breaker.acquire()
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    permit.release()
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.acquire().success()
    assert breaker.state is BreakerState.CLOSED


def test_a_released_call_is_neither_success_nor_failure() -> None:
    breaker = make(FakeClock(), failure_threshold=2)
    fail(breaker)
    breaker.acquire().release()  # e.g. cancelled: does not reset the count
    fail(breaker)
    assert breaker.state is BreakerState.OPEN


def test_outcomes_of_calls_started_before_a_transition_are_ignored() -> None:
    clock = FakeClock()
    breaker = make(clock, failure_threshold=1)
    slow = breaker.acquire()  # started while closed
    breaker.acquire().failure()  # opens the breaker
    assert breaker.state is BreakerState.OPEN
    slow.success()  # a stale success must not close it
    assert breaker.state is BreakerState.OPEN
    clock.now += 10
    trial = breaker.acquire()
    stale = slow
    stale.failure()  # already resolved: ignored
    trial.success()
    assert breaker.state is BreakerState.CLOSED


def test_a_permit_resolves_once() -> None:
    breaker = make(FakeClock(), failure_threshold=2)
    permit = breaker.acquire()
    permit.failure()
    permit.failure()
    assert breaker.state is BreakerState.CLOSED


def test_listeners_see_every_transition() -> None:
    clock = FakeClock()
    seen: list[tuple[str, str]] = []
    breaker = make(clock)
    breaker.add_listener(lambda b, old, new: seen.append((old, new)))
    other: list[str] = []
    breaker.add_listener(lambda b, old, new: other.append(b.name))
    trip(breaker)
    clock.now += 10
    breaker.acquire().success()
    assert seen == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert other == ["up", "up", "up"]


def test_reset_closes_an_open_breaker() -> None:
    breaker = make(FakeClock())
    trip(breaker)
    breaker.reset()
    assert breaker.state is BreakerState.CLOSED
    breaker.acquire().success()
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize(
    "kwargs",
    [{"failure_threshold": 0}, {"reset_timeout": 0}, {"reset_timeout": float("nan")}],
)
def test_rejects_nonsense_configuration(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be"):
        CircuitBreaker("x", **kwargs)  # type: ignore[arg-type]
