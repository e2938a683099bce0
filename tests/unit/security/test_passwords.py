"""Argon2id hashing: verification, the dummy hash, and upgrades on parameter changes."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from mercato.platform.security.passwords import HASHING_NICENESS, PasswordHasher

pytestmark = pytest.mark.anyio

CHEAP = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}


async def test_a_hash_is_argon2id_and_verifies_only_its_password() -> None:
    hasher = PasswordHasher(**CHEAP)
    stored = await hasher.hash("Zebra7Crossing")
    assert stored.startswith("$argon2id$")
    assert "Zebra7Crossing" not in stored
    assert (await hasher.verify("Zebra7Crossing", stored)).ok
    assert not (await hasher.verify("zebra7crossing", stored)).ok


async def test_an_unknown_user_is_checked_against_the_dummy_hash_and_fails() -> None:
    hasher = PasswordHasher(**CHEAP)
    calls: list[str] = []
    original = hasher._hash.verify_and_update

    def spy(password: str, target: str) -> tuple[bool, str | None]:
        calls.append(target)
        return original(password, target)

    hasher._hash.verify_and_update = spy  # type: ignore[method-assign]
    result = await hasher.verify("mercato-dummy-password-for-timing", None)
    assert not result.ok  # even the dummy's own password never logs anyone in
    assert calls == [hasher.dummy_hash]


async def test_a_hash_with_old_parameters_is_upgraded_on_a_successful_check() -> None:
    old = PasswordHasher(**CHEAP)
    stored = await old.hash("Zebra7Crossing")
    new = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
    result = await new.verify("Zebra7Crossing", stored)
    assert result.ok
    assert result.new_hash is not None
    assert "m=2048,t=2" in result.new_hash
    assert (await new.verify("Zebra7Crossing", result.new_hash)).new_hash is None
    assert (await new.verify("Wrong7Crossing", stored)).new_hash is None


async def test_an_unrecognised_hash_is_a_failure_not_a_crash() -> None:
    assert not (await PasswordHasher(**CHEAP).verify("x", "plaintext")).ok


async def test_hashing_runs_in_the_hashers_own_threads_below_the_loops_priority() -> None:
    hasher = PasswordHasher(**CHEAP)
    seen: list[tuple[str, int]] = []
    original = hasher._hash.hash

    def spy(password: str) -> str:
        seen.append((threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, 0)))
        return original(password)

    hasher._hash.hash = spy  # type: ignore[method-assign]
    try:
        await hasher.hash("Zebra7Crossing")
    finally:
        hasher.close()
    [(thread, niceness)] = seen
    assert thread.startswith("argon2")
    if sys.platform == "linux":  # per-thread priority; the loop's own thread is untouched
        assert niceness == os.getpriority(os.PRIO_PROCESS, 0) + HASHING_NICENESS
