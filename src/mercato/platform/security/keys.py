"""Signing keys for access tokens, and the JWKS that publishes their public halves.

Keys are PEM private keys, Ed25519 (``EdDSA``) or RSA >= 2048 bits (``RS256``). Several can
be active at once: the first signs, every one verifies, so a new key is rotated in by
putting it first and the old one is retired once the tokens it signed have expired. A key's
``kid`` is its RFC 7638 thumbprint, so it never has to be named by hand.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

#: The only algorithms Mercato signs or accepts. Never ``none``, never an HMAC.
ALGORITHMS: Final = frozenset({"EdDSA", "RS256"})
MIN_RSA_BITS: Final = 2048

_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z ]+)-----\s.*?-----END \1-----", re.DOTALL)

PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ed25519.Ed25519PublicKey | rsa.RSAPublicKey


class KeyConfigError(ValueError):
    """A key cannot be used (unreadable PEM, unsupported type, too short)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_jwk(public_key: PublicKey) -> dict[str, Any]:
    """The JWK of a public key with its ``kid`` (RFC 7638 thumbprint), ``alg`` and ``use``."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        jwk: dict[str, Any] = dict(OKPAlgorithm.to_jwk(public_key, as_dict=True))
        required = ("crv", "kty", "x")
        alg = "EdDSA"
    elif isinstance(public_key, rsa.RSAPublicKey):
        jwk = dict(RSAAlgorithm.to_jwk(public_key, as_dict=True))
        required = ("e", "kty", "n")
        alg = "RS256"
    else:  # pragma: no cover - guarded by the types
        raise KeyConfigError(f"unsupported key type {type(public_key).__name__}")
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    thumbprint = _b64(hashlib.sha256(canonical.encode()).digest())
    return {**{k: jwk[k] for k in required}, "kid": thumbprint, "alg": alg, "use": "sig"}


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One private key with its ``kid`` and algorithm."""

    kid: str
    algorithm: str
    private_key: PrivateKey

    @classmethod
    def from_private_key(cls, key: Any) -> SigningKey:
        if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
            raise KeyConfigError(f"RSA keys must have at least {MIN_RSA_BITS} bits")
        if not isinstance(key, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
            raise KeyConfigError(
                f"unsupported private key type {type(key).__name__}; use Ed25519 or RSA"
            )
        jwk = public_jwk(key.public_key())
        return cls(kid=jwk["kid"], algorithm=jwk["alg"], private_key=key)

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh Ed25519 key."""
        return cls.from_private_key(ed25519.Ed25519PrivateKey.generate())

    def public_jwk(self) -> dict[str, Any]:
        return public_jwk(self.private_key.public_key())

    def to_pem(self) -> str:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")


class KeySet:
    """The active signing keys: the first signs, all of them verify."""

    def __init__(self, keys: Sequence[SigningKey]) -> None:
        if not keys:
            raise KeyConfigError("a key set needs at least one key")
        kids = [key.kid for key in keys]
        if len(set(kids)) != len(kids):
            raise KeyConfigError("the same key is listed twice")
        self.keys: tuple[SigningKey, ...] = tuple(keys)

    @property
    def signing(self) -> SigningKey:
        return self.keys[0]

    @classmethod
    def from_pem(cls, text: str) -> KeySet:
        """Every private key PEM block in ``text``, in order."""
        blocks = [match.group(0) for match in _PEM_BLOCK.finditer(text)]
        if not blocks:
            raise KeyConfigError("no PEM private key found")
        keys = []
        for block in blocks:
            try:
                key = serialization.load_pem_private_key(block.encode(), password=None)
            except (ValueError, TypeError):
                raise KeyConfigError("a PEM block is not an unencrypted private key") from None
            keys.append(SigningKey.from_private_key(key))
        return cls(keys)

    def to_pem(self) -> str:
        return "".join(key.to_pem() for key in self.keys)

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public JWKS: the public halves only, never a private parameter."""
        return {"keys": [key.public_jwk() for key in self.keys]}


def load_or_create_key_file(path: Path) -> KeySet:
    """Read the key file, or create it with one new key (owner-only permissions)."""
    if path.is_file():
        return KeySet.from_pem(path.read_text(encoding="ascii"))
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = KeySet([SigningKey.generate()])
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return KeySet.from_pem(path.read_text(encoding="ascii"))
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(keys.to_pem())
    return keys


def parse_public_keys(text: str) -> list[dict[str, Any]]:
    """Public JWKs from a JWKS document (``{"keys": [...]}``) or from PEM public keys."""
    stripped = text.strip()
    if stripped.startswith("{"):
        document = json.loads(stripped)
        keys = document.get("keys") if isinstance(document, Mapping) else None
        if not isinstance(keys, list):
            raise KeyConfigError("a JWKS document needs a 'keys' list")
        return [dict(key) for key in keys if isinstance(key, Mapping)]
    jwks: list[dict[str, Any]] = []
    for match in _PEM_BLOCK.finditer(stripped):
        try:
            key = serialization.load_pem_public_key(match.group(0).encode())
        except ValueError:
            raise KeyConfigError("a PEM block is not a public key") from None
        if not isinstance(key, ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
            raise KeyConfigError(f"unsupported public key type {type(key).__name__}")
        jwks.append(public_jwk(key))
    if not jwks:
        raise KeyConfigError("no public key found")
    return jwks
