"""The auth routes of API.md: thin, each parses, calls the service and answers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response, status

from mercato.auth.dependencies import Auth, ClientAddress
from mercato.auth.schemas import (
    ChangePasswordRequest,
    ForgotPasswordRequest,
    LoginRequest,
    Me,
    RefreshRequest,
    RegisteredUser,
    RegisterRequest,
    ResetPasswordRequest,
    TokenPair,
)
from mercato.platform.app import Context
from mercato.platform.http import public_url
from mercato.platform.schemas import NUL_FREE
from mercato.platform.security.dependencies import CurrentUser

router = APIRouter(prefix="/auth", tags=["auth"])

PROBLEM: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid credentials or token"},
    422: {"description": "Invalid request"},
}
RESET_LIMITED = {"description": "Too many password-reset requests"}
WEAK_PASSWORD = {"description": "Invalid request or weak password"}
FORGOT_ANSWERS: dict[int | str, dict[str, Any]] = {
    202: {"description": "Accepted (the same answer whether or not the address is known)"},
    422: PROBLEM[422],
    429: RESET_LIMITED,
}
RESET_ANSWERS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Unknown, used or expired token"},
    422: WEAK_PASSWORD,
    429: RESET_LIMITED,
}
CHANGE_ANSWERS: dict[int | str, dict[str, Any]] = {
    400: {"description": "The current password is wrong"},
    401: PROBLEM[401],
    422: WEAK_PASSWORD,
    429: {"description": "Too many password attempts"},
}
LOGIN_ANSWERS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Bad credentials (the same for an unknown user and a wrong password)"},
    422: {"description": "Invalid request"},
    429: {"description": "Too many login attempts"},
}


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=RegisteredUser,
    responses={
        201: {
            "description": "Registered",
            "headers": {
                "Location": {
                    "description": "The new user's profile, `/api/v1/users/{id}`.",
                    "schema": {"type": "string"},
                }
            },
        },
        409: {"description": "Username or e-mail taken"},
        422: PROBLEM[422],
    },
)
async def register(
    body: RegisterRequest, context: Context, auth: Auth, response: Response
) -> RegisteredUser:
    user = await auth.accounts.register(context.db, body)
    response.headers["Location"] = public_url(f"/users/{user.id}")  # the new user's profile
    return user


@router.post("/login", response_model=TokenPair, responses=LOGIN_ANSWERS)
async def login(
    body: LoginRequest, context: Context, auth: Auth, client: ClientAddress, response: Response
) -> TokenPair:
    response.headers["Cache-Control"] = "no-store"
    return await auth.login(context.db, body.username, body.password, client=client)


@router.post("/token", response_model=TokenPair, responses=LOGIN_ANSWERS)
async def token(
    username: Annotated[str, Form(min_length=1, max_length=320, pattern=NUL_FREE)],
    password: Annotated[str, Form(min_length=1, max_length=128, pattern=NUL_FREE)],
    context: Context,
    auth: Auth,
    client: ClientAddress,
    response: Response,
) -> TokenPair:
    """The OAuth2 password flow, so that the ``/docs`` Authorize button works."""
    response.headers["Cache-Control"] = "no-store"
    return await auth.login(context.db, username, password, client=client)


@router.post("/refresh", response_model=TokenPair, responses={401: PROBLEM[401]})
async def refresh(
    body: RefreshRequest, context: Context, auth: Auth, client: ClientAddress, response: Response
) -> TokenPair:
    pair = await auth.refresh(context.db, body.refresh_token, client=client)
    response.headers["Cache-Control"] = "no-store"
    return pair


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, responses={401: PROBLEM[401]})
async def logout(
    body: RefreshRequest, user: CurrentUser, context: Context, auth: Auth, client: ClientAddress
) -> Response:
    await auth.logout(context.db, user.user_id, body.refresh_token, client=client)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/password/forgot",
    status_code=status.HTTP_202_ACCEPTED,
    response_class=Response,  # no body: the schema documents none
    responses=FORGOT_ANSWERS,
)
async def forgot_password(
    body: ForgotPasswordRequest, context: Context, auth: Auth, client: ClientAddress
) -> Response:
    """Mail a single-use reset link to the address, if an account has it."""
    await auth.forgot_password(context.db, body.email, client=client)
    return Response(status_code=status.HTTP_202_ACCEPTED)


@router.post("/password/reset", status_code=status.HTTP_204_NO_CONTENT, responses=RESET_ANSWERS)
async def reset_password(
    body: ResetPasswordRequest, context: Context, auth: Auth, client: ClientAddress
) -> Response:
    """Set a new password with the mailed token; every session of the account ends."""
    await auth.reset_password(context.db, body.token, body.new_password, client=client)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/password/change", status_code=status.HTTP_204_NO_CONTENT, responses=CHANGE_ANSWERS)
async def change_password(
    body: ChangePasswordRequest,
    user: CurrentUser,
    context: Context,
    auth: Auth,
    client: ClientAddress,
) -> Response:
    """Replace the caller's password; every other session of the account ends."""
    await auth.change_password(
        context.db,
        user.user_id,
        body.current_password,
        body.new_password,
        session_id=user.session_id,
        client=client,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", response_model=Me, responses={401: PROBLEM[401]})
async def me(user: CurrentUser, context: Context, auth: Auth) -> Me:
    return await auth.me(context.db, user.user_id)


@router.get("/.well-known/jwks.json")
async def jwks(request: Request, response: Response) -> dict[str, list[dict[str, Any]]]:
    """The public keys that verify access tokens (never a private part)."""
    response.headers["Cache-Control"] = "public, max-age=300"
    keys: dict[str, list[dict[str, Any]]] = request.app.state.jwks
    return keys
