"""The auth rows of API.md, one service in-process on embedded backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest

from mercato.auth.app import create_app
from support.auth import app_client, bearer
from support.auth import test_settings as make_settings

pytestmark = pytest.mark.anyio

PASSWORD = "Tr1ckyHorse"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(create_app(make_settings())) as http:
        yield http


def new_user(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"username": "alice", "email": "alice@example.com", "password": PASSWORD}
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


async def register(client: httpx.AsyncClient, **changes: Any) -> httpx.Response:
    return await client.post("/auth/register", json=new_user(**changes))


async def login(
    client: httpx.AsyncClient, username: str = "alice", password: str = PASSWORD
) -> httpx.Response:
    return await client.post("/auth/login", json={"username": username, "password": password})


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


# --- register ---------------------------------------------------------------------------


async def test_register_answers_201_with_the_public_fields(client: httpx.AsyncClient) -> None:
    response = await register(client, age=30, full_name="Alice A.")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "username", "email", "created_at"}
    assert body["username"] == "alice"
    assert body["email"] == "alice@example.com"
    assert body["created_at"].endswith(("Z", "+00:00"))
    assert response.headers["location"] == f"/api/v1/users/{body['id']}"


@pytest.mark.parametrize(
    ("changes", "conflicting"),
    [
        ({"email": "other@example.com"}, "username"),
        ({"username": "ALICE", "email": "other@example.com"}, "username, another case"),
        ({"username": "bob"}, "email"),
        ({"username": "bob", "email": "Alice@EXAMPLE.com"}, "email, another case"),
    ],
)
async def test_a_duplicate_username_or_email_answers_409(
    client: httpx.AsyncClient, changes: dict[str, str], conflicting: str
) -> None:
    assert (await register(client)).status_code == 201
    problem = assert_problem(await register(client, **changes), 409)
    assert problem["field"] == conflicting.split(",")[0]  # a form shows it next to that field


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"username": "al"}, "username"),
        ({"username": "a" * 51}, "username"),
        ({"username": "alice_1"}, "username"),
        ({"username": "alice smith"}, "username"),
        ({"username": "ålice"}, "username"),
        ({"username": None}, "username"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "alice@"}, "email"),
        ({"email": None}, "email"),
        ({"password": "Short1A"}, "password"),
        ({"password": "nouppercase1"}, "password"),
        ({"password": "NoDigitsHere"}, "password"),
        ({"password": "A1" + "x" * 127}, "password"),
        ({"password": "Password1"}, "password"),
        ({"password": "Qwerty123"}, "password"),
        ({"password": None}, "password"),
        ({"age": -1}, "age"),
        ({"age": 151}, "age"),
        ({"age": "old"}, "age"),
        ({"age": "30"}, "age"),  # types are strict: "30" is not an integer
        ({"age": True}, "age"),
        ({"age": 30.5}, "age"),  # 30.0 is the integer 30, to JSON Schema and to the API
        ({"full_name": "Alice\x00Smith"}, "full_name"),
        ({"full_name": 42}, "full_name"),
        ({"password": "Tr1cky\x00Horse"}, "password"),
        ({"roles": ["admin"]}, "roles"),
        ({"is_admin": True}, "is_admin"),
        ({"id": "00000000-0000-0000-0000-000000000000"}, "id"),
    ],
)
async def test_invalid_registrations_answer_422_and_create_nothing(
    client: httpx.AsyncClient, changes: dict[str, Any], field: str
) -> None:
    body = assert_problem(await register(client, **changes), 422)
    assert any(field in [str(part) for part in error["loc"]] for error in body["errors"])
    assert PASSWORD not in str(body)
    assert (await register(client)).status_code == 201  # nothing was taken by the refusal


async def test_age_bounds_are_inclusive(client: httpx.AsyncClient) -> None:
    assert (await register(client, age=0)).status_code == 201
    assert (
        await register(client, username="bob", email="b@example.com", age=150)
    ).status_code == 201


# --- login and token --------------------------------------------------------------------


async def test_login_answers_a_token_pair(client: httpx.AsyncClient) -> None:
    await register(client)
    response = await login(client)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert response.headers["cache-control"] == "no-store"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["roles"] == ["customer"]


async def test_login_is_case_insensitive_on_the_username(client: httpx.AsyncClient) -> None:
    await register(client)
    assert (await login(client, username="ALICE")).status_code == 200


async def test_unknown_user_and_wrong_password_get_the_same_answer(
    client: httpx.AsyncClient,
) -> None:
    await register(client)
    wrong = await login(client, password="Wr0ngPassword")
    unknown = await login(client, username="nobody")
    for response in (wrong, unknown):
        assert_problem(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"

    def comparable(response: httpx.Response) -> dict[str, Any]:
        return {k: v for k, v in response.json().items() if k != "request_id"}

    assert comparable(wrong) == comparable(unknown)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"username": "alice"},
        {"password": PASSWORD},
        {"username": "alice", "password": PASSWORD, "x": 1},
    ],
)
async def test_malformed_logins_answer_422(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    assert_problem(await client.post("/auth/login", json=body), 422)


async def test_the_oauth2_token_form_logs_in(client: httpx.AsyncClient) -> None:
    await register(client)
    response = await client.post("/auth/token", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200
    assert response.json()["token_type"] == "bearer"
    bad = await client.post("/auth/token", data={"username": "alice", "password": "Nope12345"})
    assert_problem(bad, 401)


async def test_the_openapi_declares_the_password_flow(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    flows = schema["components"]["securitySchemes"]["bearer"]["flows"]
    assert flows["password"]["tokenUrl"] == "/auth/token"


# --- me, refresh, logout ----------------------------------------------------------------


async def tokens(client: httpx.AsyncClient) -> dict[str, Any]:
    await register(client)
    response = await login(client)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def test_me_answers_the_account(client: httpx.AsyncClient) -> None:
    pair = await tokens(client)
    response = await client.get("/auth/me", headers=bearer(pair["access_token"]))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"id", "username", "email", "roles"}
    assert body["username"] == "alice"
    assert body["roles"] == ["customer"]


async def test_me_without_a_token_answers_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/auth/me")
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


async def test_refresh_rotates_and_the_old_token_is_dead(client: httpx.AsyncClient) -> None:
    pair = await tokens(client)
    first = await client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert first.status_code == 200
    new_pair = first.json()
    assert new_pair["refresh_token"] != pair["refresh_token"]
    assert (
        await client.get("/auth/me", headers=bearer(new_pair["access_token"]))
    ).status_code == 200
    again = await client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert_problem(again, 401)


async def test_reusing_a_rotated_token_revokes_the_whole_family(client: httpx.AsyncClient) -> None:
    pair = await tokens(client)
    rotated = (
        await client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    ).json()
    # a thief replays the old token: refused, and the legitimate new one dies with it
    assert_problem(
        await client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}), 401
    )
    assert_problem(
        await client.post("/auth/refresh", json={"refresh_token": rotated["refresh_token"]}), 401
    )


async def test_another_login_is_another_family(client: httpx.AsyncClient) -> None:
    first = await tokens(client)
    second = (await login(client)).json()
    await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})  # reuse
    assert (
        await client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]})
    ).status_code == 200


async def test_an_unknown_refresh_token_answers_401(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/auth/refresh", json={"refresh_token": "made-up"}), 401)


async def test_an_expired_refresh_token_answers_401() -> None:
    async with app_client(create_app(make_settings(refresh_token_ttl=60))) as client:
        pair = await tokens(client)
        import datetime as dt

        from mercato.auth import service

        real = service.utcnow
        service.utcnow = lambda: real() + dt.timedelta(seconds=61)  # type: ignore[assignment]
        try:
            response = await client.post(
                "/auth/refresh", json={"refresh_token": pair["refresh_token"]}
            )
        finally:
            service.utcnow = real  # type: ignore[assignment]
        assert_problem(response, 401)


async def test_logout_revokes_the_family(client: httpx.AsyncClient) -> None:
    pair = await tokens(client)
    response = await client.post(
        "/auth/logout",
        json={"refresh_token": pair["refresh_token"]},
        headers=bearer(pair["access_token"]),
    )
    assert response.status_code == 204
    assert response.content == b""
    assert_problem(
        await client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}), 401
    )


async def test_logout_needs_a_bearer_token(client: httpx.AsyncClient) -> None:
    pair = await tokens(client)
    response = await client.post("/auth/logout", json={"refresh_token": pair["refresh_token"]})
    assert_problem(response, 401)
    assert (
        await client.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    ).status_code == 200


async def test_logout_cannot_revoke_someone_elses_family(client: httpx.AsyncClient) -> None:
    alice = await tokens(client)
    await register(client, username="bob", email="bob@example.com")
    bob = (await login(client, username="bob")).json()
    response = await client.post(
        "/auth/logout",
        json={"refresh_token": alice["refresh_token"]},
        headers=bearer(bob["access_token"]),
    )
    assert response.status_code == 204
    assert (
        await client.post("/auth/refresh", json={"refresh_token": alice["refresh_token"]})
    ).status_code == 200


async def test_a_refresh_token_is_not_an_access_token(client: httpx.AsyncClient) -> None:
    pair = await tokens(client)
    assert_problem(await client.get("/auth/me", headers=bearer(pair["refresh_token"])), 401)


async def test_an_access_token_is_not_a_refresh_token(client: httpx.AsyncClient) -> None:
    pair = await tokens(client)
    assert_problem(
        await client.post("/auth/refresh", json={"refresh_token": pair["access_token"]}), 401
    )


# --- jwks -------------------------------------------------------------------------------


async def test_the_jwks_publishes_public_keys_that_verify_issued_tokens(
    client: httpx.AsyncClient,
) -> None:
    pair = await tokens(client)
    jwks = (await client.get("/auth/.well-known/jwks.json")).json()
    assert jwks["keys"]
    for key in jwks["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)
    kid = jwt.get_unverified_header(pair["access_token"])["kid"]
    key = next(k for k in jwks["keys"] if k["kid"] == kid)
    claims = jwt.decode(
        pair["access_token"], jwt.PyJWK(key).key, algorithms=[key["alg"]], audience="mercato"
    )
    assert claims["iss"] == "mercato"
