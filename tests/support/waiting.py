"""Waiting for something that happens in the background, bounded so a test fails, never hangs.

::

    from support.waiting import eventually

    await eventually(lambda: len(handled) == 3)              # a sync check
    rows = await eventually(blocked_backends, within=5)      # an async one; its value comes back

A check holds when it returns a truthy value. Returning a falsy value or raising
``AssertionError`` (say, from a helper that asserts a 200 on the way) both mean "not yet";
on timeout the last assertion is in the failure, so a check that returns ``None`` never holds.

For events published through an outbox, ``support.messaging.drain`` waits until everything
published was handled; ``eventually`` waits for one condition.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    check: Callable[[], T | Awaitable[T]], *, within: float = 10.0, interval: float = 0.02
) -> T:
    """Call ``check`` (sync or async) every ``interval`` seconds until it returns a truthy
    value, and return that value; an ``AssertionError`` from ``check`` counts as "not yet".

    After ``within`` seconds it raises ``AssertionError`` naming the timeout, chained to the
    last assertion ``check`` raised (if any). Any other exception propagates at once.
    """
    deadline = time.monotonic() + within
    while True:
        failure: AssertionError | None = None
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
        except AssertionError as error:
            failure = error
        else:
            if result:
                return result  # type: ignore[return-value]
        if time.monotonic() > deadline:
            if failure is None:
                raise AssertionError(f"not true within {within}s: the check returned {result!r}")
            raise AssertionError(f"not true within {within}s: {failure}") from failure
        await asyncio.sleep(interval)
