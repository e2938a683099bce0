"""Access tokens: issued by the auth service, verified locally by every service.

An access token is a JWT signed with an asymmetric key (:mod:`.keys`), typed ``at+jwt``
(RFC 9068), carrying ``sub``, ``roles``, ``exp``, ``iat``, ``nbf``, ``jti``, ``iss`` and
``aud``. :class:`TokenVerifier` checks it against a JWKS fetched from the auth service
(cached, refetched on an unknown ``kid`` at a bounded rate) or against static keys, and
keeps verified tokens in a bounded LRU until they expire, so the per-request cost of a
repeated token is a dictionary lookup.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import aiohttp
import jwt
import structlog

from mercato.platform.security.keys import (
    ALGORITHMS,
    KeySet,
    load_or_create_key_file,
    parse_public_keys,
)
from mercato.platform.settings import ConfigError, SharedSettings

log = structlog.stdlib.get_logger("mercato.security")

TOKEN_TYPE: Final = "at+jwt"  # noqa: S105 - a media type, not a secret
REQUIRED_CLAIMS: Final = ("sub", "roles", "exp", "iat", "nbf", "jti", "iss", "aud")


class InvalidToken(Exception):
    """The token is refused; ``reason`` is safe to log (it never contains the token)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeysUnavailable(Exception):
    """No verification key could be obtained (the JWKS endpoint does not answer)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified access token speaks for."""

    user_id: str
    roles: frozenset[str]
    jti: str
    expires_at: datetime
    #: The ``sid`` claim: the sign-in session the token was issued for, when it names one.
    session_id: str | None = None

    def has_role(self, role: str) -> bool:
        return role in self.roles

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    jti: str
    expires_at: datetime
    expires_in: int


@dataclass(eq=False)
class TokenIssuer:
    """Signs access tokens with the first key of a :class:`KeySet`."""

    keys: KeySet
    _: KW_ONLY
    issuer: str
    audience: str
    ttl: int = 900
    clock: Callable[[], float] = time.time

    def issue(
        self, user_id: str, roles: Sequence[str] = (), *, session_id: str | None = None
    ) -> IssuedToken:
        """A signed access token; ``session_id`` becomes its ``sid`` claim."""
        now = int(self.clock())
        jti = uuid.uuid4().hex
        claims: dict[str, Any] = {
            "sub": user_id,
            "roles": sorted(set(roles)),
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl,
            "jti": jti,
            "iss": self.issuer,
            "aud": self.audience,
        }
        if session_id is not None:
            claims["sid"] = session_id
        key = self.keys.signing
        token = jwt.encode(
            claims,
            key.private_key,
            algorithm=key.algorithm,
            headers={"kid": key.kid, "typ": TOKEN_TYPE},
        )
        return IssuedToken(
            token=token,
            jti=jti,
            expires_at=datetime.fromtimestamp(now + self.ttl, UTC),
            expires_in=self.ttl,
        )


class KeySource(Protocol):
    """Where a verifier finds the public key of a ``kid``."""

    async def get(self, kid: str) -> jwt.PyJWK | None: ...

    async def close(self) -> None: ...


def _to_pyjwk(jwk: Mapping[str, Any]) -> jwt.PyJWK | None:
    alg = jwk.get("alg")
    if alg not in ALGORITHMS or not isinstance(jwk.get("kid"), str):
        return None
    try:
        return jwt.PyJWK(dict(jwk), algorithm=alg)
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError):
        return None


def _index(jwks: Sequence[Mapping[str, Any]]) -> dict[str, jwt.PyJWK]:
    found: dict[str, jwt.PyJWK] = {}
    for jwk in jwks:
        if jwk.get("use", "sig") != "sig":
            continue
        key = _to_pyjwk(jwk)
        if key is not None:
            found[str(jwk["kid"])] = key
    return found


class StaticKeys:
    """A fixed set of public keys (the auth service itself, tests, air-gapped setups)."""

    def __init__(self, jwks: Sequence[Mapping[str, Any]]) -> None:
        self._keys = _index(jwks)

    async def get(self, kid: str) -> jwt.PyJWK | None:
        return self._keys.get(kid)

    async def close(self) -> None:
        return None


@dataclass(eq=False)
class JwksKeys:
    """Public keys from a JWKS URL: cached for ``ttl`` seconds, refetched early on an
    unknown ``kid`` at most once per ``min_refetch_interval`` (a flood of made-up ``kid``
    values cannot turn into a flood of requests to the auth service)."""

    url: str
    _: KW_ONLY
    ttl: float = 300.0
    min_refetch_interval: float = 10.0
    timeout: float = 3.0
    clock: Callable[[], float] = time.monotonic
    #: Client spans of the fetches, when tracing is on.
    trace_configs: Sequence[aiohttp.TraceConfig] = ()
    fetches: int = field(default=0, init=False)
    _keys: dict[str, jwt.PyJWK] = field(default_factory=dict, init=False, repr=False)
    _fetched_at: float | None = field(default=None, init=False, repr=False)
    _attempted_at: float | None = field(default=None, init=False, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)

    async def get(self, kid: str) -> jwt.PyJWK | None:
        fetched = self._fetched_at
        if fetched is None or self.clock() - fetched >= self.ttl or kid not in self._keys:
            await self._refresh()
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        attempted = self._attempted_at
        async with self._lock:
            now = self.clock()
            waited_for_another = self._attempted_at != attempted
            # With no key at all every request fails anyway: retry sooner (the auth
            # service may just be starting), still at a bounded rate.
            interval = (
                self.min_refetch_interval if self._keys else min(1.0, self.min_refetch_interval)
            )
            too_soon = self._attempted_at is not None and now - self._attempted_at < interval
            if not waited_for_another and not too_soon:
                self._attempted_at = now
                try:
                    jwks = await self._fetch()
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    log.warning("jwks fetch failed", url=self.url, error=type(exc).__name__)
                else:
                    self._keys = _index(jwks)
                    self._fetched_at = now
        if self._fetched_at is None:
            raise KeysUnavailable(f"cannot fetch the JWKS from {self.url}")

    async def _fetch(self) -> list[dict[str, Any]]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                trace_configs=list(self.trace_configs) or None,
            )
        self.fetches += 1
        async with self._session.get(self.url) as response:
            response.raise_for_status()
            document = await response.json(content_type=None)
        keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(keys, list):
            raise ValueError("the JWKS has no 'keys' list")
        return [key for key in keys if isinstance(key, dict)]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass(eq=False)
class TokenVerifier:
    """Verifies access tokens and answers a :class:`Principal` (or raises
    :class:`InvalidToken`; :class:`KeysUnavailable` when no key can be had at all)."""

    keys: KeySource
    _: KW_ONLY
    issuer: str
    audience: str
    leeway: float = 30.0
    cache_size: int = 10_000
    clock: Callable[[], float] = time.time
    _cache: OrderedDict[str, Principal] = field(default_factory=OrderedDict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.leeway <= 30:
            raise ValueError("the leeway must be between 0 and 30 seconds")

    async def verify(self, token: str) -> Principal:
        cached = self._cache.get(token)
        if cached is not None:
            if cached.expires_at.timestamp() > self.clock():
                self._cache.move_to_end(token)
                return cached
            del self._cache[token]
        principal = await self._verify(token)
        if self.cache_size:
            self._cache[token] = principal
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return principal

    async def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise InvalidToken("malformed") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise InvalidToken("algorithm not allowed")
        if header.get("typ") != TOKEN_TYPE:
            raise InvalidToken("not an access token")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("no key id")
        key = await self.keys.get(kid)
        if key is None:
            raise InvalidToken("unknown key id")
        if key.algorithm_name != alg:
            raise InvalidToken("algorithm does not match the key")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("not yet valid") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("wrong issuer") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("bad signature") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"missing claim {exc.claim}") from None
        except jwt.InvalidTokenError:
            raise InvalidToken("invalid") from None
        return _principal(claims)

    async def close(self) -> None:
        await self.keys.close()


def _principal(claims: Mapping[str, Any]) -> Principal:
    sub, jti, roles, exp = claims["sub"], claims["jti"], claims["roles"], claims["exp"]
    if not isinstance(sub, str) or not sub or not isinstance(jti, str):
        raise InvalidToken("invalid claims")
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise InvalidToken("invalid roles")
    try:
        expires_at = datetime.fromtimestamp(int(exp), UTC)
    except (OverflowError, ValueError, OSError):  # e.g. exp = 10**20: past year 9999
        raise InvalidToken("invalid expiry") from None
    sid = claims.get("sid")
    return Principal(
        user_id=sub,
        roles=frozenset(roles),
        jti=jti,
        expires_at=expires_at,
        session_id=sid if isinstance(sid, str) else None,
    )


# --- from settings ----------------------------------------------------------------------


def signing_keys(settings: SharedSettings) -> KeySet:
    """The auth service's signing keys: ``JWT_PRIVATE_KEYS`` (also from the secrets
    directory), else ``JWT_PRIVATE_KEYS_FILE``; outside production only, a key file in
    ``DATA_DIR`` generated on first start (testing: a throw-away key in memory)."""
    from mercato.platform.security.keys import KeyConfigError, SigningKey

    try:
        if settings.jwt_private_keys is not None:
            return KeySet.from_pem(settings.jwt_private_keys.get_secret_value())
        if settings.jwt_private_keys_file is not None:
            if settings.is_production and not settings.jwt_private_keys_file.is_file():
                raise KeyConfigError(
                    f"JWT_PRIVATE_KEYS_FILE {settings.jwt_private_keys_file} does not exist"
                )
            return load_or_create_key_file(settings.jwt_private_keys_file)
    except KeyConfigError as exc:
        raise ConfigError([f"JWT signing keys: {exc}"]) from None
    if settings.is_production:
        raise ConfigError(
            [
                "JWT_PRIVATE_KEYS (or JWT_PRIVATE_KEYS_FILE) is not set;"
                " production never generates signing keys"
            ]
        )
    if settings.environment == "testing":
        return KeySet([SigningKey.generate()])
    return load_or_create_key_file(settings.data_dir / "jwt-keys.pem")


def token_issuer(settings: SharedSettings, keys: KeySet) -> TokenIssuer:
    return TokenIssuer(
        keys,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl=settings.access_token_ttl,
    )


def jwks_url(settings: SharedSettings) -> str:
    return settings.token_keys_url()


def token_verifier(
    settings: SharedSettings,
    keys: KeySource | None = None,
    *,
    trace_configs: Sequence[aiohttp.TraceConfig] = (),
) -> TokenVerifier:
    """The verifier a service uses: ``keys`` if given; else ``JWT_PUBLIC_KEYS``; else the
    public halves of ``JWT_PRIVATE_KEYS`` when set; else the auth service's JWKS (fetched
    with ``trace_configs``)."""
    if keys is None:
        if settings.jwt_public_keys:
            keys = StaticKeys(parse_public_keys(settings.jwt_public_keys))
        elif settings.jwt_private_keys is not None:
            keys = StaticKeys(
                KeySet.from_pem(settings.jwt_private_keys.get_secret_value()).jwks()["keys"]
            )
        else:
            keys = JwksKeys(
                jwks_url(settings),
                ttl=settings.jwks_cache_ttl,
                min_refetch_interval=settings.jwks_min_refetch_interval,
                trace_configs=trace_configs,
            )
    return TokenVerifier(
        keys,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway=settings.jwt_leeway,
        cache_size=settings.token_cache_size,
    )
