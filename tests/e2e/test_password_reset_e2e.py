"""Password reset through the gateway of a real `mercato up`: forgot, the mailed ``.eml``
file in DATA_DIR/outbox-mail, reset, then sign in with the new password."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from support.mail import mailed_link
from support.processes import RunningMercato
from support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

PASSWORD, NEW_PASSWORD = "Zebra7Crossing", "Giraffe8Walking"


@pytest.fixture
async def api(mercato: RunningMercato) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{mercato.base_url}/api/v1", timeout=30) as client:
        yield client


async def test_forgot_mail_reset_and_sign_in_with_the_new_password(
    mercato: RunningMercato, api: httpx.AsyncClient
) -> None:
    username = f"reset{uuid.uuid4().hex[:10]}"
    address = f"{username}@example.com"
    registered = await api.post(
        "/auth/register", json={"username": username, "email": address, "password": PASSWORD}
    )
    assert registered.status_code == 201, registered.text
    old = (await api.post("/auth/login", json={"username": username, "password": PASSWORD})).json()

    # A stale token a client still attaches does not block the way back in.
    stale = {"Authorization": "Bearer not.a.token"}
    asked = await api.post("/auth/password/forgot", json={"email": address}, headers=stale)
    assert asked.status_code == 202, asked.text
    unknown = await api.post("/auth/password/forgot", json={"email": f"x{address}"})
    assert (unknown.status_code, unknown.content) == (asked.status_code, asked.content)

    link = await eventually(lambda: mailed_link(Path(mercato.data_dir) / "outbox-mail", address))
    assert link.startswith(f"{mercato.base_url}/reset?token=")
    token = parse_qs(urlsplit(link).query)["token"][0]

    reset = await api.post(
        "/auth/password/reset", json={"token": token, "new_password": NEW_PASSWORD}, headers=stale
    )
    assert reset.status_code == 204, reset.text
    again = await api.post(
        "/auth/password/reset", json={"token": token, "new_password": "Another9Horse"}
    )
    assert again.status_code == 400
    assert again.headers["content-type"] == "application/problem+json"

    assert (
        await api.post("/auth/refresh", json={"refresh_token": old["refresh_token"]})
    ).status_code == 401
    signed_in = await api.post("/auth/login", json={"username": username, "password": NEW_PASSWORD})
    assert signed_in.status_code == 200, signed_in.text
    pair = signed_in.json()
    changed = await api.post(
        "/auth/password/change",
        json={"current_password": NEW_PASSWORD, "new_password": "Third3Password"},
        headers={"Authorization": f"Bearer {pair['access_token']}"},
    )
    assert changed.status_code == 204, changed.text
    assert (
        await api.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    ).status_code == 200
    assert token not in mercato.log()
