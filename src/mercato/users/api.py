"""The users routes of API.md."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from mercato.platform.app import Context
from mercato.platform.schemas import NUL_FREE
from mercato.users import service
from mercato.users.dependencies import AdminUser, CurrentUser, Limit, Offset
from mercato.users.schemas import Profile, ProfilePage, ProfilePatch

router = APIRouter(prefix="/users", tags=["users"])

ANSWERS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid access token"},
    404: {"description": "No such user (or not yours)"},
}


@router.get("/me", response_model=Profile, responses=ANSWERS)
async def read_me(user: CurrentUser, context: Context) -> Profile:
    return await service.profile_for(context.db, user, user.user_id)


@router.patch(
    "/me", response_model=Profile, responses={**ANSWERS, 422: {"description": "Invalid field"}}
)
async def update_me(patch: ProfilePatch, user: CurrentUser, context: Context) -> Profile:
    return await service.update_profile(context.db, user.user_id, patch)


@router.get(
    "",
    response_model=ProfilePage,
    responses={**ANSWERS, 403: {"description": "Administrators only"}},
)
async def list_users(
    _admin: AdminUser, context: Context, limit: Limit = 20, offset: Offset = 0
) -> ProfilePage:
    return await service.list_profiles(context.db, limit=limit, offset=offset)


@router.get("/{user_id}", response_model=Profile, responses=ANSWERS)
async def read_user(
    user_id: Annotated[str, Path(pattern=NUL_FREE)],
    user: CurrentUser,
    context: Context,
) -> Profile:
    return await service.profile_for(context.db, user, user_id)
