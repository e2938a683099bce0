"""Storefront sessions: a random id in a signed cookie, everything else server-side.

The cookie holds only the session id, signed with ``SECRET_KEY`` (itsdangerous), so a
forged or altered cookie is refused before the store is read. The session itself (the
user's tokens and the secret its CSRF tokens are made from) lives in the cache: Redis when
``REDIS_URL`` is set, so that every gateway instance sees it, else the gateway's memory.

A session id is never reused across a change of identity: signing in and signing out each
start a new session (no session fixation), and the old one is deleted from the store.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

from itsdangerous import BadSignature, TimestampSigner

from mercato.platform.cache import Cache

#: Refresh the access token this long before it expires, so a page never calls with a dead one.
REFRESH_MARGIN: Final = 30.0


@dataclass(frozen=True, slots=True)
class SignedIn:
    """Who the session belongs to, and the tokens the pages call the API with."""

    user_id: str
    username: str
    roles: tuple[str, ...]
    access_token: str
    refresh_token: str
    access_expires_at: float

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def needs_refresh(self, now: float | None = None) -> bool:
        return (now or time.time()) >= self.access_expires_at - REFRESH_MARGIN

    def with_tokens(self, access_token: str, refresh_token: str, expires_in: float) -> SignedIn:
        return replace(
            self,
            access_token=access_token,
            refresh_token=refresh_token,
            access_expires_at=time.time() + expires_in,
        )


@dataclass(slots=True)
class Session:
    """One browser's session. ``csrf`` is the secret its CSRF tokens are derived from."""

    id: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    user: SignedIn | None = None
    #: One-shot messages for the next page ("Your password was changed.").
    flashes: list[str] = field(default_factory=list)

    def dumps(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def loads(cls, raw: bytes) -> Session:
        data: dict[str, Any] = json.loads(raw)
        user = data.get("user")
        return cls(
            id=data["id"],
            csrf=data["csrf"],
            user=SignedIn(**{**user, "roles": tuple(user["roles"])}) if user else None,
            flashes=list(data.get("flashes", [])),
        )


class SessionStore:
    """Sessions in ``cache``, each kept ``ttl`` seconds after its last save."""

    def __init__(self, cache: Cache, *, secret: str, ttl: float) -> None:
        self.cache = cache
        self.ttl = ttl
        self._signer = TimestampSigner(secret, salt="mercato.storefront.session")

    def cookie_value(self, session: Session) -> str:
        return self._signer.sign(session.id).decode("ascii")

    def session_id(self, cookie: str | None) -> str | None:
        """The id a cookie carries, if its signature is ours and it is not older than the TTL."""
        if not cookie:
            return None
        try:
            return self._signer.unsign(cookie, max_age=int(self.ttl)).decode("ascii")
        except (BadSignature, UnicodeDecodeError):
            return None

    async def load(self, cookie: str | None) -> Session | None:
        session_id = self.session_id(cookie)
        if session_id is None:
            return None
        return await self.load_by_id(session_id)

    async def load_by_id(self, session_id: str) -> Session | None:
        raw = await self.cache.get(session_id)
        return Session.loads(raw) if raw is not None else None

    async def save(self, session: Session) -> None:
        await self.cache.set(session.id, session.dumps(), ttl=self.ttl)

    async def delete(self, session: Session) -> None:
        await self.cache.delete(session.id)
