"""Password hashing with Argon2id (pwdlib), off the event loop.

Hashes carry their parameters, so raising ``ARGON2_*`` takes effect for new hashes at once
and for old ones at their owner's next successful login (:meth:`PasswordHasher.verify`
answers the upgraded hash). Verifying against :attr:`PasswordHasher.dummy_hash` when a user
does not exist makes a failed login take the same time whether or not the user exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio.to_thread
from pwdlib import PasswordHash
from pwdlib.exceptions import UnknownHashError
from pwdlib.hashers.argon2 import Argon2Hasher


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    new_hash: str | None = None  # set when the stored hash should be replaced


class PasswordHasher:
    def __init__(
        self, *, time_cost: int = 2, memory_cost: int = 19_456, parallelism: int = 1
    ) -> None:
        self._hash = PasswordHash(
            (Argon2Hasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism),)
        )
        self.dummy_hash = self._hash.hash("mercato-dummy-password-for-timing")

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self._hash.hash, password)

    async def verify(self, password: str, stored_hash: str | None) -> Verification:
        """Check ``password``; with no ``stored_hash`` (unknown user) check it against the
        dummy hash so that the answer takes as long, and is always a failure."""
        target = stored_hash or self.dummy_hash
        try:
            ok, new_hash = await anyio.to_thread.run_sync(
                self._hash.verify_and_update, password, target
            )
        except UnknownHashError:
            return Verification(ok=False)
        if stored_hash is None:
            return Verification(ok=False)
        return Verification(ok=ok, new_hash=new_hash if ok else None)
