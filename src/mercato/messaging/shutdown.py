"""How Mercato's background loops stop, always (STYLE.md item 17).

A loop runs ``while not stop.is_set()`` and idles with :func:`pause` (``asyncio.timeout``,
never ``asyncio.wait_for``: on Python 3.11 ``wait_for`` can swallow a cancellation that lands
as its inner awaitable completes, cpython gh-86296). Whoever stops it sets the event and
waits with :func:`wait_ended` or :func:`bounded`: a wait of a known length that cancels what
is still running when it is up, and then gives up on it with a warning naming it, instead of
waiting for a task that may never end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterable
from typing import Any

from mercato.platform.logging import get_logger

log = get_logger("mercato.shutdown")

#: How long a task is given to unwind once it has been cancelled.
CANCEL_GRACE = 1.0


async def pause(seconds: float, event: asyncio.Event) -> bool:
    """Wait ``seconds``, or less if ``event`` is set meanwhile; return whether it is set."""
    if not event.is_set() and seconds > 0:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await event.wait()
    return event.is_set()


def time_left(deadline: float) -> float:
    """Seconds from now (the running loop's clock) to ``deadline``, never negative."""
    return max(deadline - asyncio.get_running_loop().time(), 0.0)


def _forget(task: asyncio.Task[Any]) -> None:
    """Retrieve the outcome of an abandoned task whenever it ends (no "never retrieved")."""
    if not task.cancelled():
        task.exception()


async def wait_ended(
    tasks: Iterable[asyncio.Task[Any]],
    *,
    within: float,
    what: str,
    cancel_grace: float = CANCEL_GRACE,
) -> bool:
    """Wait up to ``within`` seconds for ``tasks`` to end on their own (their loops were told
    to stop); cancel those still running and give them ``cancel_grace`` seconds more. A task
    that is still running then is abandoned, never awaited again, with a warning naming
    ``what``. A task's failure is logged, not raised.

    Returns True when every task ended by itself, without an error, in time. If the caller
    is cancelled meanwhile, the tasks are cancelled too and the cancellation propagates."""
    pending = {task for task in tasks if not task.done()}
    everything = set(tasks) | pending
    clean = True
    try:
        if pending:
            _, pending = await asyncio.wait(pending, timeout=within)
        if pending:
            clean = False
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=cancel_grace)
    except asyncio.CancelledError:
        for task in everything:
            task.cancel()
        raise
    if pending:
        for task in pending:
            task.add_done_callback(_forget)
        log.warning(
            "gave up waiting for a task to stop; abandoning it",
            what=what,
            tasks=sorted(task.get_name() for task in pending),
            waited=round(within + cancel_grace, 3),
        )
    elif not clean:
        log.warning("stopped by cancellation after the time given", what=what, within=within)
    for task in everything - pending:
        if task.cancelled():
            continue
        error = task.exception()
        if error is not None:
            clean = False
            log.warning(
                "failed while stopping", what=what, error=f"{type(error).__name__}: {error}"
            )
    return clean


async def bounded(
    awaitable: Awaitable[Any],
    *,
    within: float,
    what: str,
    cancel_grace: float = CANCEL_GRACE,
) -> bool:
    """Run one shutdown step (``awaitable``, as a task) for at most ``within`` seconds, then
    cancel it and move on (see :func:`wait_ended`). Never raises what the step raised.
    Returns True when the step completed in time."""
    task = asyncio.ensure_future(awaitable)
    return await wait_ended([task], within=within, what=what, cancel_grace=cancel_grace)
