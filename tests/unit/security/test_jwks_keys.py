"""The JWKS client: cached, refetched on an unknown kid at a bounded rate."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from mercato.platform.security.keys import KeySet, SigningKey
from mercato.platform.security.tokens import (
    InvalidToken,
    JwksKeys,
    KeysUnavailable,
    TokenIssuer,
    TokenVerifier,
)
from support.auth import AUDIENCE, ISSUER, TEST_JWKS, TEST_KEY, issue_token

pytestmark = pytest.mark.anyio


class FakeJwks(JwksKeys):
    """Answers ``documents`` in turn instead of calling the network."""

    def __init__(self, documents: list[Any], **options: Any) -> None:
        self.now = 1000.0
        super().__init__("http://auth.test/jwks", clock=lambda: self.now, **options)
        self.documents = documents

    async def _fetch(self) -> list[dict[str, Any]]:
        self.fetches += 1
        document = self.documents[min(self.fetches, len(self.documents)) - 1]
        if isinstance(document, Exception):
            raise document
        return list(document["keys"])


def verifier(keys: JwksKeys) -> TokenVerifier:
    return TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE, cache_size=0)


async def test_keys_are_fetched_once_and_cached() -> None:
    keys = FakeJwks([TEST_JWKS])
    check = verifier(keys)
    await check.verify(issue_token("a"))
    await check.verify(issue_token("b"))
    assert keys.fetches == 1


async def test_an_unknown_kid_refetches_so_a_rotated_key_is_accepted() -> None:
    new_key = SigningKey.generate()
    rotated = KeySet([new_key, TEST_KEY]).jwks()
    keys = FakeJwks([TEST_JWKS, rotated], min_refetch_interval=10)
    check = verifier(keys)
    await check.verify(issue_token("a"))
    keys.now += 11
    token = TokenIssuer(KeySet([new_key]), issuer=ISSUER, audience=AUDIENCE).issue("b").token
    assert (await check.verify(token)).user_id == "b"
    assert keys.fetches == 2


async def test_made_up_kids_cannot_flood_the_auth_service() -> None:
    keys = FakeJwks([TEST_JWKS], min_refetch_interval=10)
    check = verifier(keys)
    await check.verify(issue_token("a"))
    other = KeySet([SigningKey.generate()])
    forger = TokenIssuer(other, issuer=ISSUER, audience=AUDIENCE)

    async def flood() -> None:
        for number in range(20):
            with pytest.raises(InvalidToken):
                await check.verify(forger.issue(f"x{number}").token)

    await flood()
    assert keys.fetches == 1  # fetched just now: no refetch within the interval
    keys.now += 11
    await flood()
    assert keys.fetches == 2  # one refetch per interval, however many unknown kids


async def test_keys_are_refreshed_after_their_ttl() -> None:
    keys = FakeJwks([TEST_JWKS, TEST_JWKS], ttl=300)
    check = verifier(keys)
    await check.verify(issue_token("a"))
    keys.now += 301
    await check.verify(issue_token("b"))
    assert keys.fetches == 2


async def test_stale_keys_are_kept_when_a_refresh_fails() -> None:
    keys = FakeJwks([TEST_JWKS, aiohttp.ClientConnectionError("down")], ttl=300)
    check = verifier(keys)
    await check.verify(issue_token("a"))
    keys.now += 301
    assert (await check.verify(issue_token("b"))).user_id == "b"


async def test_no_keys_at_all_is_an_outage_not_a_refusal() -> None:
    keys = FakeJwks([aiohttp.ClientConnectionError("down")])
    with pytest.raises(KeysUnavailable):
        await verifier(keys).verify(issue_token("a"))


async def test_without_any_key_a_fetch_is_retried_after_a_second_not_the_full_interval() -> None:
    keys = FakeJwks([aiohttp.ClientConnectionError("starting"), TEST_JWKS], min_refetch_interval=10)
    check = verifier(keys)
    with pytest.raises(KeysUnavailable):
        await check.verify(issue_token("a"))
    keys.now += 0.5
    with pytest.raises(KeysUnavailable):  # still bounded: no refetch within the second
        await check.verify(issue_token("a"))
    assert keys.fetches == 1
    keys.now += 0.6
    assert (await check.verify(issue_token("a"))).user_id == "a"
    assert keys.fetches == 2
