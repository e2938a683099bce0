"""Rules of the auth context: what a username and a password may be, and the life of the
refresh tokens and the password-reset tokens. Plain Python: no web framework, no ORM."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from importlib import resources
from typing import Final
from urllib.parse import urlencode

USERNAME_MIN: Final = 3
USERNAME_MAX: Final = 50
PASSWORD_MIN: Final = 8
PASSWORD_MAX: Final = 128
AGE_MAX: Final = 150

CUSTOMER: Final = "customer"
ADMIN: Final = "admin"
DEFAULT_ROLES: Final = (CUSTOMER,)

#: The rules as JSON-schema patterns (ECMA-262 and Python alike, no look-ahead, so that a
#: schema fuzzer can generate from them): the API refuses exactly what they refuse.
USERNAME_PATTERN: Final = rf"^[A-Za-z0-9]{{{USERNAME_MIN},{USERNAME_MAX}}}$"
#: An upper-case letter and a digit, in either order, and no NUL (the length is separate).
PASSWORD_PATTERN: Final = r"^[^\x00]*(?:[A-Z][^\x00]*[0-9]|[0-9][^\x00]*[A-Z])[^\x00]*$"  # noqa: S105
PASSWORD_RULE: Final = (
    f"{PASSWORD_MIN} to {PASSWORD_MAX} characters with at least one upper-case letter (A-Z)"
    " and one digit (0-9), and not one of the common passwords (whatever the case)"
)

_USERNAME = re.compile(rf"[A-Za-z0-9]{{{USERNAME_MIN},{USERNAME_MAX}}}")
_UPPER = re.compile(r"[A-Z]")
_DIGIT = re.compile(r"[0-9]")


def username_problem(username: str) -> str | None:
    """Why ``username`` is refused, or ``None``: 3..50 ASCII letters and digits."""
    if _USERNAME.fullmatch(username) is None:
        return f"must be {USERNAME_MIN} to {USERNAME_MAX} characters, letters and digits only"
    return None


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    """The bundled list of common passwords (lower-case)."""
    text = resources.files("mercato.auth").joinpath("data/common-passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip().lower()
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    )


def password_problem(password: str) -> str | None:
    """Why ``password`` is refused, or ``None``."""
    if len(password) < PASSWORD_MIN:
        return f"must be at least {PASSWORD_MIN} characters"
    if len(password) > PASSWORD_MAX:
        return f"must be at most {PASSWORD_MAX} characters"
    if _UPPER.search(password) is None:
        return "must contain an upper-case letter (A-Z)"
    if _DIGIT.search(password) is None:
        return "must contain a digit (0-9)"
    if password.lower() in common_passwords():
        return "is too common; choose another"
    return None


def username_key(username: str) -> str:
    """Usernames are unique whatever their case."""
    return username.lower()


def email_key(email: str) -> str:
    """E-mail addresses are unique whatever their case."""
    return email.strip().lower()


# --- refresh tokens ---------------------------------------------------------------------

REFRESH_TOKEN_BYTES: Final = 32


def new_refresh_token() -> str:
    """An opaque, unguessable refresh token (never stored as is)."""
    return secrets.token_urlsafe(REFRESH_TOKEN_BYTES)


def refresh_token_hash(token: str) -> str:
    """What is stored: a SHA-256 digest (the token is high-entropy, so no salt is needed)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def session_id(family_id: str) -> str:
    """The ``sid`` claim of the access tokens of one refresh-token family: its UUID in 22
    URL-safe characters (an access token stays short enough to pass where a refresh token
    is expected and be refused as one)."""
    return base64.urlsafe_b64encode(uuid.UUID(family_id).bytes).rstrip(b"=").decode()


def family_of_session(sid: str | None) -> str | None:
    """The refresh-token family a ``sid`` claim names, or ``None`` for none or a bad one."""
    if sid is None or len(sid) != 22:
        return None
    try:
        return str(uuid.UUID(bytes=base64.urlsafe_b64decode(sid + "==")))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class RefreshState:
    """What is known about a presented refresh token."""

    family_revoked: bool
    used: bool
    expires_at: datetime

    def verdict(self, now: datetime) -> str:
        """``ok``, or why it is refused: ``revoked``, ``reused`` (revoke the family) or
        ``expired``."""
        if self.family_revoked:
            return "revoked"
        if self.used:
            return "reused"
        if self.expires_at <= now:
            return "expired"
        return "ok"


# --- password reset ---------------------------------------------------------------------

RESET_TOKEN_BYTES: Final = 32
#: The storefront page a mailed link opens (served at the gateway's root).
RESET_PAGE: Final = "/reset"


def new_reset_token() -> str:
    """An opaque, unguessable password-reset token: mailed, never stored as is."""
    return secrets.token_urlsafe(RESET_TOKEN_BYTES)


def reset_token_hash(token: str) -> str:
    """What is stored of a reset token: its SHA-256 digest (high entropy: no salt needed)."""
    return refresh_token_hash(token)


def reset_link(public_url: str, token: str) -> str:
    """The link mailed for ``token``: ``<public_url>/reset?token=<token>``."""
    return f"{public_url.rstrip('/')}{RESET_PAGE}?{urlencode({'token': token})}"


@dataclass(frozen=True, slots=True)
class ResetState:
    """What is known about a stored reset token."""

    expires_at: datetime
    used_at: datetime | None

    def usable(self, now: datetime) -> bool:
        """Whether it may still set a password: never used (nor superseded) and not expired
        (a token is dead from ``expires_at`` on)."""
        return self.used_at is None and now < self.expires_at
