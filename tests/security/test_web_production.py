"""The production profile, black-box: no error body shows a stack trace, SQL, a driver or
an internal address, whatever the client breaks (malformed JSON, wrong types, huge ids,
path traversal, hostile forms); the docs are closed; TRACE is 405 on every route, TRACK and
unknown methods are refused, and none of them echoes the request (OWASP API8 security
misconfiguration; ASVS V13 configuration, V16 error handling)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from support.processes import RunningMercato
from support.security_web import (
    crawl,
    header_problems,
    internal_ports,
    leaks,
    operations,
)

pytest_plugins = ["support.security_web_plugin"]
pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
HUGE_ID = "9" * 4000
#: A header whose value an echo of the request (TRACE's purpose) would show.
PROBE = {"X-Probe": "trace-probe-secret"}


@pytest.fixture
async def client(web_production: RunningMercato) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=web_production.base_url, timeout=30) as http:
        yield http


async def broken_requests(client: httpx.AsyncClient) -> dict[str, httpx.Response]:
    """Each way a client can break a request, and its answer."""
    api = "/api/v1"
    bad_token = {"Authorization": "Bearer not.a.token"}
    return {
        "malformed JSON": await client.post(
            f"{api}/auth/login", content=b'{"username": ', headers=JSON
        ),
        "JSON of the wrong shape": await client.post(f"{api}/auth/register", json=[1, 2]),
        "wrong types": await client.post(
            f"{api}/auth/register",
            json={"username": 1, "email": [], "password": {"$ne": None}, "age": "old"},
        ),
        "a number beyond any column": await client.post(
            f"{api}/auth/register",
            content=b'{"username": "a", "email": "a@b.c", "password": "x", "age": 1e999}',
            headers=JSON,
        ),
        "NUL in text": await client.post(
            f"{api}/auth/login", json={"username": "a\u0000b", "password": "x"}
        ),
        "not JSON at all": await client.post(
            f"{api}/auth/login", content=b"\xff\xfe\x00", headers=JSON
        ),
        "a huge id": await client.get(f"{api}/products/{HUGE_ID}"),
        "a huge id, signed": await client.get(f"{api}/orders/{HUGE_ID}", headers=bad_token),
        "a negative id": await client.get(f"{api}/users/-1", headers=bad_token),
        "an encoded traversal": await client.get(f"{api}/products/..%2F..%2Fetc%2Fpasswd"),
        "an encoded NUL": await client.get(f"{api}/products/%00"),
        "paging out of range": await client.get(f"{api}/products?limit=abc&offset=-1"),
        "a sort outside its list": await client.get(f"{api}/products?sort=name;DROP TABLE x"),
        "a forged token": await client.get(f"{api}/auth/me", headers=bad_token),
        "an unknown service": await client.get(f"{api}/nowhere/x"),
        "a page that does not exist": await client.get("/no-such-page"),
        "a form without a token": await client.post("/login", content=b"username=a", headers=FORM),
        "a form too large": await client.post(
            "/login", content=b"a=" + b"x" * 70_000, headers=FORM
        ),
        "a form that is not UTF-8": await client.post("/login", content=b"a=%ff", headers=FORM),
        "a static file that does not exist": await client.get("/static/nope.js"),
        "an encoded traversal of /static": await client.get("/static/..%2f..%2f__init__.py"),
    }


async def raw_get(running: RunningMercato, target: str) -> tuple[int, bytes]:
    """GET ``target`` exactly as written (httpx would resolve its dot segments first)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", running.ports["gateway"])
    writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_no_error_body_shows_a_trace_sql_or_internal_host(
    web_production: RunningMercato, client: httpx.AsyncClient
) -> None:
    answers = await broken_requests(client)

    statuses = {name: answer.status_code for name, answer in answers.items()}
    assert {name: status for name, status in statuses.items() if not 400 <= status < 500} == {}
    internal = internal_ports(web_production)
    assert {
        name: leaks(answer, internal) for name, answer in answers.items() if leaks(answer, internal)
    } == {}
    api = {name: answer for name, answer in answers.items() if "/api/" in str(answer.url)}
    assert {answer.headers["content-type"] for answer in api.values()} == {
        "application/problem+json"
    }


@pytest.mark.parametrize(
    "target",
    [
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/../../etc/passwd",
        "/api/v1/products/../../../etc/passwd",
        "/api/v1/../../settings.py",
    ],
)
async def test_path_traversal_reaches_no_file(web_production: RunningMercato, target: str) -> None:
    status, body = await raw_get(web_production, target)

    assert 400 <= status < 500
    assert b"root:" not in body
    assert b"Traceback" not in body
    assert b"import " not in body  # no Python source either


async def test_the_docs_and_schema_are_closed(client: httpx.AsyncClient) -> None:
    closed = {path: await client.get(path) for path in ("/docs", "/openapi.json", "/redoc")}

    assert {path: answer.status_code for path, answer in closed.items()} == dict.fromkeys(
        closed, 404
    )
    assert "openapi" not in closed["/openapi.json"].text


async def every_route(running: RunningMercato, development: RunningMercato) -> list[str]:
    """Every page the production storefront links to, and every path of the API's schema
    (the development instance serves it: the same code, with its docs open)."""
    async with httpx.AsyncClient(timeout=30) as http:
        document = (await http.get(f"{development.base_url}/openapi.json")).json()
    async with httpx.AsyncClient(base_url=running.base_url, timeout=30) as http:
        pages = (await crawl(http, ["/", "/login"])).answers
    found = {target for target, answer in pages.items() if answer.status_code != 404}
    found |= {operation.path for operation in operations(document, {})}
    return sorted(found | {"/healthz", "/readyz", "/metrics"})


async def test_trace_is_405_on_every_route_and_echoes_nothing(
    web_production: RunningMercato, web_shop: RunningMercato, client: httpx.AsyncClient
) -> None:
    routes = await every_route(web_production, web_shop)

    answers = {route: await client.request("TRACE", route, headers=PROBE) for route in routes}

    assert len(routes) >= 20
    assert {route: a.status_code for route, a in answers.items() if a.status_code != 405} == {}
    assert [route for route, a in answers.items() if PROBE["X-Probe"] in a.text] == []
    problems = {route: header_problems(a, hsts=True) for route, a in answers.items()}
    assert {route: found for route, found in problems.items() if found} == {}


@pytest.mark.parametrize("method", ["TRACK", "FOO", "PROPFIND", "DEBUG"])
async def test_unknown_and_extension_methods_are_refused(
    web_production: RunningMercato, web_shop: RunningMercato, client: httpx.AsyncClient, method: str
) -> None:
    routes = await every_route(web_production, web_shop)

    answers = {route: await client.request(method, route, headers=PROBE) for route in routes}

    refused = {405, 501}  # known to HTTP but not here / not known at all (RFC 9110)
    assert {
        route: a.status_code for route, a in answers.items() if a.status_code not in refused
    } == {}
    assert [route for route, a in answers.items() if PROBE["X-Probe"] in a.text] == []
    problems = {route: header_problems(a, hsts=True) for route, a in answers.items()}
    assert {route: found for route, found in problems.items() if found} == {}
