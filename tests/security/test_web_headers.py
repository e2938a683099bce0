"""The security headers on every answer of the gateway: every page and file the storefront
links to (crawled as a visitor and as an administrator), every operation of the merged
OpenAPI schema, and 2xx, 3xx, 4xx and 5xx answers alike; HSTS where it applies (OWASP API8
security misconfiguration; ASVS V3 web frontend, V13 configuration)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from support.processes import RunningMercato, free_ports
from support.production import mercato_up_live, production_env
from support.security_web import (
    Crawl,
    admin_token,
    crawl,
    header_problems,
    internal_ports,
    leaks,
    operations,
    sign_in_by_hand,
)
from support.storefront import ADMIN, ADMIN_PASSWORD, Browser

pytest_plugins = ["support.security_web_plugin"]
pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

#: Where a crawl starts besides the catalogue: a page that does not exist (a 404 page).
START = ("/", "/login", "/no-such-page")


async def crawled_as_visitor_and_admin(running: RunningMercato, *, secure: bool = False) -> Crawl:
    """Two crawls: a visitor's, and an administrator's (``secure``: whose session cookie is
    ``Secure``, carried by hand over this plain HTTP)."""
    async with Browser(running.base_url) as visitor, Browser(running.base_url) as admin:
        seen = await crawl(visitor.http, START)
        if secure:
            admin.http.headers["Cookie"] = await sign_in_by_hand(admin.http, ADMIN, ADMIN_PASSWORD)
        else:
            await admin.sign_in(ADMIN, ADMIN_PASSWORD)
        as_admin = await crawl(admin.http, START)
        assert ADMIN in as_admin.answers["/"].text
    return Crawl(
        {
            **{f"visitor {k}": v for k, v in seen.answers.items()},
            **{f"admin {k}": v for k, v in as_admin.answers.items()},
        },
        [*seen.forms, *as_admin.forms],
    )


@pytest.fixture(scope="module")
async def storefront_crawl(web_shop: RunningMercato) -> Crawl:
    return await crawled_as_visitor_and_admin(web_shop)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


def api_answers(running: RunningMercato, document: dict[str, object]) -> dict[str, httpx.Response]:
    """Every operation of ``document`` anonymously (writes with an empty body), and every
    GET again as the administrator; real product ids fill ``{product_id}``."""
    base = running.base_url
    product = httpx.get(f"{base}/api/v1/products?limit=1", timeout=30).json()["items"][0]
    admin = {"Authorization": f"Bearer {admin_token(running)}"}
    answers = {}
    with httpx.Client(base_url=base, timeout=30) as client:
        for operation in operations(document, {"product_id": product["id"]}):
            body = {} if operation.method in ("POST", "PUT", "PATCH") else None
            answers[f"{operation.method} {operation.path}"] = client.request(
                operation.method, operation.path, json=body
            )
            if operation.method == "GET":
                answers[f"admin GET {operation.path}"] = client.get(operation.path, headers=admin)
        answers["GET /api/v1/products/ (redirect)"] = client.get("/api/v1/products/")
    return answers


def problems_of(answers: dict[str, httpx.Response], *, hsts: bool) -> dict[str, list[str]]:
    found = {
        f"{name} -> {answer.status_code}": header_problems(answer, hsts=hsts)
        for name, answer in answers.items()
    }
    return {name: problems for name, problems in found.items() if problems}


def status_classes(answers: dict[str, httpx.Response]) -> set[int]:
    return {answer.status_code // 100 for answer in answers.values()}


async def test_every_page_and_file_the_storefront_links_to_carries_the_headers(
    storefront_crawl: Crawl,
) -> None:
    answers = storefront_crawl.answers

    assert problems_of(answers, hsts=False) == {}
    assert {"visitor /", "visitor /login", "admin /", "visitor /static/style.css"} <= set(answers)
    assert {2, 3, 4} <= status_classes(answers)


async def test_no_page_can_be_framed(storefront_crawl: Crawl) -> None:
    pages = storefront_crawl.pages()

    framable = {
        path
        for path, page in pages.items()
        if page.headers.get("x-frame-options") != "DENY"
        or "frame-ancestors 'none'" not in page.headers.get("content-security-policy", "")
    }
    assert len(pages) >= 4
    assert framable == set()


def test_every_operation_of_the_schema_carries_the_headers(web_shop: RunningMercato) -> None:
    document = httpx.get(f"{web_shop.base_url}/openapi.json", timeout=30).json()
    answers = api_answers(web_shop, document)

    assert len(operations(document, {})) >= 20
    assert problems_of(answers, hsts=False) == {}
    assert {2, 3, 4} <= status_classes(answers)


def test_a_forwarded_https_from_an_untrusted_peer_does_not_turn_hsts_on(
    web_shop: RunningMercato,
) -> None:
    answer = httpx.get(f"{web_shop.base_url}/", headers={"X-Forwarded-Proto": "https"}, timeout=30)

    assert answer.status_code == 200
    assert "strict-transport-security" not in answer.headers


async def test_production_answers_carry_hsts_everywhere(web_production: RunningMercato) -> None:
    seen = await crawled_as_visitor_and_admin(web_production, secure=True)
    async with httpx.AsyncClient(base_url=web_production.base_url, timeout=30) as client:
        api = {
            "GET /api/v1/products": await client.get("/api/v1/products"),
            "GET /api/v1/auth/me": await client.get("/api/v1/auth/me"),
            "POST /api/v1/auth/login": await client.post("/api/v1/auth/login", json={}),
            "GET /docs": await client.get("/docs"),
        }

    assert problems_of({**seen.answers, **api}, hsts=True) == {}


@pytest.fixture(scope="module")
def unready(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMercato]:
    """Production started without `mercato migrate`: alive, every service unready."""
    tmp_path = tmp_path_factory.mktemp("web-unready")
    with mercato_up_live(tmp_path, free_ports(), production_env()) as running:
        yield running


def test_server_errors_carry_the_headers_and_show_no_internals(unready: RunningMercato) -> None:
    with httpx.Client(base_url=unready.base_url, timeout=30) as client:
        answers = {
            "GET /readyz": client.get("/readyz"),
            "GET /api/v1/products": client.get("/api/v1/products"),
            "GET /": client.get("/"),
            "POST /api/v1/auth/login": client.post(
                "/api/v1/auth/login", json={"username": "someone", "password": "Some-pass-1"}
            ),
        }

    assert answers["GET /readyz"].status_code == 503
    assert 5 in status_classes(answers)
    assert problems_of(answers, hsts=True) == {}
    internal = internal_ports(unready)
    assert {name: leaks(a, internal) for name, a in answers.items() if leaks(a, internal)} == {}
