"""Password hashing with Argon2id (pwdlib), off the event loop.

Hashing runs in the hasher's own pool of threads, one per CPU this process may use, not in
the default pool that every ``to_thread`` shares: a login storm then waits for a hashing
thread instead of piling up Argon2's 19 MiB per concurrent hash, and the other work of the
pool is not queued behind it. On Linux those threads run at a lower scheduling priority
(``nice`` +10, per thread): Argon2 releases the GIL, so the event loop keeps serving requests
on a busy core and the hashing takes the CPU time left over.

Hashes carry their parameters, so raising ``ARGON2_*`` takes effect for new hashes at once
and for old ones at their owner's next successful login (:meth:`PasswordHasher.verify`
answers the upgraded hash). Verifying against :attr:`PasswordHasher.dummy_hash` when a user
does not exist makes a failed login take the same time whether or not the user exists.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pwdlib import PasswordHash
from pwdlib.exceptions import UnknownHashError
from pwdlib.hashers.argon2 import Argon2Hasher


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    new_hash: str | None = None  # set when the stored hash should be replaced


#: How much lower than the event loop the hashing threads run (``nice`` increment, Linux).
HASHING_NICENESS = 10


def _lower_this_threads_priority() -> None:
    """In a hashing thread: lower its own priority. Linux applies ``setpriority`` to the
    calling thread when given its thread id; elsewhere the id is no process's, so skip."""
    if sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_NICENESS)


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class PasswordHasher:
    def __init__(
        self, *, time_cost: int = 2, memory_cost: int = 19_456, parallelism: int = 1
    ) -> None:
        self._hash = PasswordHash(
            (Argon2Hasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism),)
        )
        self.dummy_hash = self._hash.hash("mercato-dummy-password-for-timing")
        self._threads = ThreadPoolExecutor(
            max_workers=_usable_cpus(),
            thread_name_prefix="argon2",
            initializer=_lower_this_threads_priority,
        )

    def close(self) -> None:
        """Let the hashing threads end once their work is done."""
        self._threads.shutdown(wait=False)

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(
            self._threads, self._hash.hash, password
        )

    async def verify(self, password: str, stored_hash: str | None) -> Verification:
        """Check ``password``; with no ``stored_hash`` (unknown user) check it against the
        dummy hash so that the answer takes as long, and is always a failure."""
        target = stored_hash or self.dummy_hash
        try:
            ok, new_hash = await asyncio.get_running_loop().run_in_executor(
                self._threads, self._hash.verify_and_update, password, target
            )
        except UnknownHashError:
            return Verification(ok=False)
        if stored_hash is None:
            return Verification(ok=False)
        return Verification(ok=ok, new_hash=new_hash if ok else None)
