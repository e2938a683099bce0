"""The circuit breaker: closed -> open -> half-open -> closed, driven by a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from mercato.platform.errors import ServiceUnavailable
from mercato.platform.resilience import (
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
    breaker_states,
)

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Boom(Exception):
    pass


def make(clock: FakeClock, **kwargs: object) -> CircuitBreaker:
    options: dict[str, object] = {"failure_threshold": 3, "reset_timeout": 10.0, **kwargs}
    return CircuitBreaker("up", clock=clock, **options)  # type: ignore[arg-type]


async def fail() -> None:
    raise Boom


async def ok() -> str:
    return "ok"


async def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        with pytest.raises(Boom):
            await breaker.call(fail)


async def test_opens_after_threshold_consecutive_failures_and_refuses_without_calling() -> None:
    clock = FakeClock()
    breaker = make(clock)
    for _ in range(2):
        with pytest.raises(Boom):
            await breaker.call(fail)
    assert breaker.state is BreakerState.CLOSED
    with pytest.raises(Boom):
        await breaker.call(fail)
    assert breaker.state is BreakerState.OPEN

    called = False

    async def spy() -> None:
        nonlocal called
        called = True

    with pytest.raises(CircuitOpenError) as info:
        await breaker.call(spy)
    assert not called
    assert isinstance(info.value, ServiceUnavailable)
    assert info.value.status == 503
    assert info.value.headers["Retry-After"] == "10"


async def test_a_success_resets_the_consecutive_failure_count() -> None:
    breaker = make(FakeClock())
    for _ in range(2):
        with pytest.raises(Boom):
            await breaker.call(fail)
    assert await breaker.call(ok) == "ok"
    for _ in range(2):
        with pytest.raises(Boom):
            await breaker.call(fail)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 2


async def test_half_open_after_timeout_then_a_trial_success_closes() -> None:
    clock = FakeClock()
    breaker = make(clock)
    await trip(breaker)
    clock.now += 4
    assert breaker.retry_after() == pytest.approx(6)
    with pytest.raises(CircuitOpenError) as info:
        breaker.acquire()
    assert info.value.headers["Retry-After"] == "6"
    clock.now += 6
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.state_code == 1
    assert await breaker.call(ok) == "ok"
    assert breaker.state is BreakerState.CLOSED
    assert breaker.state_code == 0


async def test_a_trial_failure_reopens_for_a_full_timeout() -> None:
    clock = FakeClock()
    breaker = make(clock)
    await trip(breaker)
    clock.now += 10
    with pytest.raises(Boom):
        await breaker.call(fail)
    assert breaker.state is BreakerState.OPEN
    assert breaker.state_code == 2
    assert breaker.retry_after() == pytest.approx(10)


async def test_half_open_lets_only_the_allowed_number_of_trials_through() -> None:
    clock = FakeClock()
    breaker = make(clock, half_open_max_calls=2, success_threshold=2)
    await trip(breaker)
    clock.now += 10
    first = breaker.acquire()
    second = breaker.acquire()
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    first.success()
    assert breaker.state is BreakerState.HALF_OPEN  # needs two successes
    second.success()
    assert breaker.state is BreakerState.CLOSED


async def test_a_released_trial_frees_its_slot_without_deciding() -> None:
    clock = FakeClock()
    breaker = make(clock)
    await trip(breaker)
    clock.now += 10
    permit = breaker.acquire()
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    permit.release()
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.acquire().success()
    assert breaker.state is BreakerState.CLOSED


async def test_exceptions_that_are_not_failures_do_not_count() -> None:
    breaker = make(FakeClock(), is_failure=lambda exc: not isinstance(exc, KeyError))

    async def missing() -> None:
        raise KeyError("x")

    for _ in range(5):
        with pytest.raises(KeyError):
            await breaker.call(missing)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.consecutive_failures == 0


async def test_cancellation_is_not_a_failure() -> None:
    breaker = make(FakeClock(), failure_threshold=1)

    async def hang() -> None:
        await asyncio.Event().wait()

    task = asyncio.ensure_future(breaker.call(hang))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state is BreakerState.CLOSED


async def test_outcomes_of_calls_started_before_a_transition_are_ignored() -> None:
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


async def test_a_permit_resolves_once() -> None:
    breaker = make(FakeClock(), failure_threshold=2)
    permit = breaker.acquire()
    permit.failure()
    permit.failure()
    assert breaker.consecutive_failures == 1


async def test_guard_counts_the_block() -> None:
    breaker = make(FakeClock(), failure_threshold=1)
    async with breaker.guard():
        pass
    assert breaker.state is BreakerState.CLOSED
    with pytest.raises(Boom):
        async with breaker.guard():
            raise Boom
    assert breaker.state is BreakerState.OPEN


async def test_listeners_see_every_transition() -> None:
    clock = FakeClock()
    seen: list[tuple[str, str]] = []
    breaker = make(clock, on_state_change=lambda b, old, new: seen.append((old, new)))
    other: list[str] = []
    breaker.add_listener(lambda b, old, new: other.append(b.name))
    await trip(breaker)
    clock.now += 10
    await breaker.call(ok)
    assert seen == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    assert other == ["up", "up", "up"]
    assert breaker_states({"up": breaker}) == {"up": "closed"}


async def test_reset_closes_an_open_breaker() -> None:
    breaker = make(FakeClock())
    await trip(breaker)
    breaker.reset()
    assert breaker.state is BreakerState.CLOSED
    assert await breaker.call(ok) == "ok"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0},
        {"reset_timeout": 0},
        {"reset_timeout": float("nan")},
        {"half_open_max_calls": 0},
        {"success_threshold": 0},
    ],
)
def test_rejects_nonsense_configuration(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be"):
        CircuitBreaker("x", **kwargs)  # type: ignore[arg-type]
