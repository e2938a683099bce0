"""The auth service's settings: refresh tokens, password hashing, login limits, password
reset, the bootstrap administrator and its database."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings

from mercato.platform.settings import DatabaseUrl, Profile, rate_limit


class AuthSettings(BaseSettings):
    """Sign-in, passwords and the bootstrap administrator (see README, "Authentication")."""

    PROFILE: ClassVar[Profile] = {
        # Argon2 at its cheapest: tests hash many passwords (production keeps the defaults).
        "testing": {"argon2_time_cost": 1, "argon2_memory_cost": 1024, "argon2_parallelism": 1},
    }

    auth_database_url: DatabaseUrl = Field(
        None, description="the auth service's own database, over DATABASE_URL"
    )
    refresh_token_ttl: int = Field(14 * 86_400, ge=60, description="seconds")
    # OWASP's first Argon2id choice (19 MiB, 2 passes, 1 lane): about 80 ms a hash on one
    # core; RFC 9106's 64 MiB x 3 x 4 took 0.5 s here, a login denial-of-service lever.
    argon2_time_cost: int = Field(2, ge=1, description="Argon2id passes (default 2)")
    argon2_memory_cost: int = Field(
        19_456, ge=8, description="Argon2id memory, KiB (default 19456)"
    )
    argon2_parallelism: int = Field(1, ge=1, description="Argon2id lanes (default 1)")
    rate_limit_login: Annotated[str, rate_limit("5/minute")] = Field(
        "5/minute", description="login attempts per username and client address"
    )
    rate_limit_login_address: Annotated[str, rate_limit("5/minute")] = Field(
        "30/minute", description="login attempts per client address, whatever the username"
    )
    rate_limit_password_reset: Annotated[str, rate_limit("5/hour")] = Field(
        "5/hour", description="password-reset mails asked for one e-mail address, from anywhere"
    )
    rate_limit_password_reset_address: Annotated[str, rate_limit("30/minute")] = Field(
        "30/minute", description="password-reset requests and resets per client address"
    )
    password_reset_ttl: int = Field(
        3600, ge=60, le=86_400, description="seconds a mailed password-reset link stays valid"
    )
    admin_username: str | None = Field(
        None,
        validation_alias=AliasChoices("mercato_admin_username", "admin_username"),
        description="with MERCATO_ADMIN_PASSWORD: ensure this admin exists at start-up",
    )
    admin_password: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("mercato_admin_password", "admin_password"),
        description="the bootstrap admin's password (used only when the user is created)",
    )
