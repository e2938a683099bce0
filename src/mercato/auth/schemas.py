"""Request and response bodies of the auth API."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Final, Literal

import email_validator
from pydantic import BaseModel, EmailStr, Field, ValidationInfo, field_validator

from mercato.auth import domain
from mercato.platform.schemas import Integral, StrictModel, Text

#: The domains e-mail validation refuses (``example.test``...): the schema names them too.
RESERVED_DOMAINS: Final = "|".join(
    "".join(
        f"[{char.lower()}{char.upper()}]" if char.isalpha() else re.escape(char) for char in name
    )
    for name in email_validator.SPECIAL_USE_DOMAIN_NAMES  # whatever the case, as it compares
)
Email = Annotated[
    EmailStr,
    Field(
        max_length=320,
        json_schema_extra={"not": {"pattern": rf"[@.](?:{RESERVED_DOMAINS})\.?$"}},
        description="An e-mail address; special-use domains (`.test`, `.local`...) are refused.",
    ),
]


def ruled(length: tuple[int, int], pattern: str, rule: str) -> Any:
    """The field of a text that a domain rule checks (the validators below say why a value
    is refused): its length, and the rule as the schema's ``pattern`` and description."""
    low, high = length
    return Field(
        min_length=low, max_length=high, json_schema_extra={"pattern": pattern}, description=rule
    )


#: A username as registration takes it.
Username = Annotated[
    Text,
    ruled(
        (domain.USERNAME_MIN, domain.USERNAME_MAX),
        domain.USERNAME_PATTERN,
        "Letters (A-Z, a-z) and digits only.",
    ),
]
#: A password being chosen: the schema carries the whole rule but the common passwords.
NewPassword = Annotated[
    Text,
    ruled(
        (domain.PASSWORD_MIN, domain.PASSWORD_MAX),
        domain.PASSWORD_PATTERN,
        f"{domain.PASSWORD_RULE[0].upper()}{domain.PASSWORD_RULE[1:]}.",
    ),
]


class RegisterRequest(StrictModel):
    username: Username
    email: Email
    password: NewPassword
    age: Annotated[int, Field(ge=0, le=domain.AGE_MAX), Integral] | None = None
    full_name: Text | None = Field(None, max_length=200)

    @field_validator("username", "password")
    @classmethod
    def _follows_the_rules(cls, value: str, info: ValidationInfo) -> str:
        if problem := RULES[info.field_name](value):
            raise ValueError(f"{info.field_name} {problem}")
        return value


#: What is wrong with a chosen username or password (None: nothing), by field.
RULES: dict[str | None, Callable[[str], str | None]] = {
    "username": domain.username_problem,
    "password": domain.password_problem,
}


class RegisteredUser(BaseModel):
    id: str
    username: str
    email: str
    created_at: datetime


class LoginRequest(StrictModel):
    username: Text = Field(min_length=1, max_length=320)
    password: Text = Field(min_length=1, max_length=domain.PASSWORD_MAX)


class RefreshRequest(StrictModel):
    refresh_token: Text = Field(min_length=1, max_length=512)


class ForgotPasswordRequest(StrictModel):
    email: Email


class _NewPassword(StrictModel):
    """A body that chooses a password: the rules of registration (422 otherwise)."""

    new_password: NewPassword

    @field_validator("new_password")
    @classmethod
    def _follows_the_rules(cls, value: str, info: ValidationInfo) -> str:
        if problem := RULES["password"](value):
            raise ValueError(f"{info.field_name} {problem}")
        return value


class ResetPasswordRequest(_NewPassword):
    token: Text = Field(min_length=1, max_length=512)


class ChangePasswordRequest(_NewPassword):
    current_password: Text = Field(min_length=1, max_length=domain.PASSWORD_MAX)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type
    expires_in: int


class Me(BaseModel):
    id: str
    username: str
    email: str
    roles: list[str]
