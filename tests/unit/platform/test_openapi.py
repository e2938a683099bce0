"""The OpenAPI document says what the platform answers: every error as problem+json, the
answers any operation may give, and a 405's ``Allow`` naming every method of the path."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.security import HTTPBearer
from pydantic import BaseModel

from mercato.platform.errors import PROBLEM_JSON, UnprocessableEntity, install_error_handlers
from mercato.platform.openapi import install_problem_docs

pytestmark = pytest.mark.anyio


class Thing(BaseModel):
    name: str


def build_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app, expose_internals=False)
    install_problem_docs(app)
    router = APIRouter(prefix="/things")  # included routers are nested in FastAPI >= 0.120

    @router.get("/{thing_id}", responses={404: {"description": "No such thing."}})
    async def read(thing_id: str) -> Thing:
        return Thing(name=thing_id)

    @router.patch("/{thing_id}")
    async def change(
        thing_id: str, body: Thing, _token: Annotated[Any, Depends(HTTPBearer())]
    ) -> Thing:
        return body

    @router.delete("/{thing_id}", status_code=204)
    async def remove(thing_id: str) -> None:
        raise UnprocessableEntity("Not today.", loc=("path", "thing_id"))

    app.include_router(router)
    return app


def responses(document: dict[str, Any], method: str) -> dict[str, Any]:
    result: dict[str, Any] = document["paths"]["/things/{thing_id}"][method]["responses"]
    return result


def test_every_error_answer_is_documented_as_problem_json() -> None:
    document = build_app().openapi()
    for method in ("get", "patch", "delete"):
        for status, response in responses(document, method).items():
            if int(status) >= 400:
                media = response["content"]
                expected = "ValidationProblem" if status == "422" else "Problem"
                assert media == {
                    PROBLEM_JSON: {"schema": {"$ref": f"#/components/schemas/{expected}"}}
                }
    assert responses(document, "get")["404"]["description"] == "No such thing."  # kept
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert "errors" in schemas["ValidationProblem"]["allOf"][1]["required"]


def test_the_answers_of_the_platform_are_listed_where_they_can_happen() -> None:
    document = build_app().openapi()
    with_body, without = responses(document, "patch"), responses(document, "get")
    assert {"400", "401", "413", "422", "431", "503"} <= set(with_body)
    assert "WWW-Authenticate" in with_body["401"]["headers"]
    assert {"422", "431", "503"} <= set(without)  # a path parameter can be invalid
    assert not {"400", "401", "413"} & set(without)


async def test_a_405_allows_every_method_the_path_takes() -> None:
    transport = httpx.ASGITransport(build_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.options("/things/lamp")
        unknown = await client.put("/things/lamp")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "DELETE, GET, HEAD, PATCH"
    assert unknown.headers["allow"] == answer.headers["allow"]
    assert answer.headers["content-type"] == PROBLEM_JSON


async def test_every_422_carries_errors() -> None:
    transport = httpx.ASGITransport(build_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        answer = await client.delete("/things/lamp")
    assert answer.status_code == 422
    assert answer.json()["errors"] == [{"loc": ["path", "thing_id"], "msg": "Not today."}]
