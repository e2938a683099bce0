"""Annotated dependencies of the auth API."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mercato.auth.service import AuthService
from mercato.platform.app import Context
from mercato.platform.security.dependencies import client_address


async def get_auth_service(request: Request) -> AuthService:
    service: AuthService = request.app.state.auth_service
    return service


async def get_client_address(request: Request, context: Context) -> str:
    return client_address(request, context.settings)


Auth = Annotated[AuthService, Depends(get_auth_service)]
ClientAddress = Annotated[str, Depends(get_client_address)]
