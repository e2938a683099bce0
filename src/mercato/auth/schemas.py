"""Request and response bodies of the auth API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, EmailStr, Field, ValidationInfo, field_validator

from mercato.auth import domain
from mercato.platform.schemas import StrictModel, Text


class RegisterRequest(StrictModel):
    username: Text = Field(min_length=domain.USERNAME_MIN, max_length=domain.USERNAME_MAX)
    email: EmailStr = Field(max_length=320)
    password: Text = Field(min_length=domain.PASSWORD_MIN, max_length=domain.PASSWORD_MAX)
    age: int | None = Field(None, ge=0, le=domain.AGE_MAX)
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
    email: EmailStr = Field(max_length=320)


class _NewPassword(StrictModel):
    """A body that chooses a password: the rules of registration (422 otherwise)."""

    new_password: Text = Field(min_length=domain.PASSWORD_MIN, max_length=domain.PASSWORD_MAX)

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
