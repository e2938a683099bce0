"""/openapi.json merges the services' schemas under /api/v1; /docs is Swagger UI from the
package (no CDN, no inline script)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from mercato.settings import load_settings
from support.auth import trusting_overrides
from support.gateway import gateway_settings, running
from support.standin import StandIn, serve

pytestmark = pytest.mark.anyio


def schema(service: str, model: str = "Item") -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": service, "version": "1"},
        "paths": {
            f"/{service}/{{id}}": {
                "get": {
                    "responses": {
                        "200": {
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": f"#/components/schemas/{model}"}
                                }
                            }
                        }
                    },
                    "security": [{"OAuth2PasswordBearer": []}],
                }
            },
            "/healthz": {"get": {"responses": {"200": {}}}},
        },
        "components": {
            "schemas": {model: {"type": "object", "title": f"{service} item"}},
            "securitySchemes": {
                "OAuth2PasswordBearer": {
                    "type": "oauth2",
                    "flows": {"password": {"tokenUrl": "/auth/token", "scopes": {}}},
                }
            },
        },
    }


async def test_openapi_merges_the_services_under_api_v1() -> None:
    products, orders = StandIn(openapi=schema("products")), StandIn(openapi=schema("orders"))
    async with (
        serve(products) as p,
        serve(orders) as o,
        running(gateway_settings({"products": p.url, "orders": o.url})) as (_, http),
    ):
        document = (await http.get("/openapi.json")).json()
    assert set(document["paths"]) == {"/api/v1/products/{id}", "/api/v1/orders/{id}"}
    schemas = document["components"]["schemas"]
    assert set(schemas) == {"Item", "OrdersItem"}  # same name, different shape: renamed
    orders_ref = document["paths"]["/api/v1/orders/{id}"]["get"]["responses"]["200"]
    assert orders_ref["content"]["application/json"]["schema"]["$ref"].endswith("/OrdersItem")
    flow = document["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]
    assert flow["password"]["tokenUrl"] == "/api/v1/auth/token"
    assert "x-unavailable" not in document


async def test_openapi_names_a_service_that_never_answered() -> None:
    products = StandIn(openapi=schema("products"))
    async with (
        serve(products) as p,
        running(gateway_settings({"products": p.url, "orders": "http://127.0.0.1:9"})) as (_, http),
    ):
        document = (await http.get("/openapi.json")).json()
    assert "/api/v1/products/{id}" in document["paths"]
    assert document["x-unavailable"] == ["orders"]


async def test_docs_page_uses_only_files_shipped_in_the_package() -> None:
    async with running(gateway_settings({"products": "http://127.0.0.1:9"})) as (_, http):
        page = await http.get("/docs")
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assets = {source: await http.get(source) for source in sources}
    assert page.status_code == 200
    assert "<script>" not in page.text  # no inline script: the CSP forbids it
    assert sources
    assert all(source.startswith("/docs/static/") for source in sources)
    assert all(answer.status_code == 200 for answer in assets.values())
    bundle = assets["/docs/static/swagger/swagger-ui-bundle.js"]
    assert len(bundle.content) > 500_000
    assert "SwaggerUIBundle" in assets["/docs/static/docs-init.js"].text


async def test_docs_are_off_in_production_unless_enabled() -> None:
    production: dict[str, Any] = {
        **trusting_overrides(),
        "environment": "production",
        "secret_key": "s" * 40,
        "allowed_hosts": "gateway.test",
        "gateway_routes": {"products": "http://127.0.0.1:9"},
    }
    off = load_settings(env_file=None, **production)
    on = load_settings(env_file=None, docs_enabled=True, **production)
    async with running(off) as (_, http):
        assert (await http.get("/docs")).status_code == 404
        assert (await http.get("/openapi.json")).status_code == 404
    async with running(on) as (_, http):
        assert (await http.get("/docs")).status_code == 200
