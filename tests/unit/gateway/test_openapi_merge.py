"""Merging service schemas: paths under /api/v1, conflicts renamed, token URLs moved."""

from __future__ import annotations

from mercato.gateway.openapi import merge, service_part


def doc(paths: dict[str, object], schemas: dict[str, object]) -> dict[str, object]:
    return {"paths": paths, "components": {"schemas": schemas}, "tags": [{"name": "t"}]}


def test_only_the_services_own_paths_are_exposed() -> None:
    part = service_part(
        "users",
        doc({"/users/me": {}, "/users": {}, "/healthz": {}, "/usersx": {}}, {}),
    )
    assert set(part["paths"]) == {"/api/v1/users/me", "/api/v1/users"}


def test_identical_components_are_shared_and_different_ones_renamed() -> None:
    ref = {"$ref": "#/components/schemas/Problem"}
    problem = {"type": "object"}
    parts = {
        "a": service_part("a", doc({"/a/x": {"get": ref}}, {"Problem": problem, "Page": {"a": 1}})),
        "b": service_part("b", doc({"/b/y": {"get": ref}}, {"Problem": problem, "Page": {"b": 2}})),
    }
    merged = merge(parts, title="T", version="1", description="")
    assert set(merged["components"]["schemas"]) == {"Problem", "Page", "BPage"}
    assert merged["components"]["schemas"]["BPage"] == {"b": 2}
    assert merged["paths"]["/api/v1/b/y"]["get"] == ref  # Problem was identical: not renamed
    assert merged["tags"] == [{"name": "t"}]


def test_refs_to_a_renamed_component_follow_it() -> None:
    parts = {
        "a": service_part("a", doc({}, {"Item": {"a": 1}})),
        "b": service_part(
            "b", doc({"/b/1": {"get": {"$ref": "#/components/schemas/Item"}}}, {"Item": {"b": 1}})
        ),
    }
    merged = merge(parts, title="T", version="1", description="")
    assert merged["paths"]["/api/v1/b/1"]["get"]["$ref"] == "#/components/schemas/BItem"


def test_token_urls_move_under_the_api_prefix() -> None:
    document = {
        "paths": {},
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "oauth2",
                    "flows": {
                        "password": {"tokenUrl": "/auth/token", "refreshUrl": "/auth/refresh"}
                    },
                }
            }
        },
    }
    flows = service_part("auth", document)["components"]["securitySchemes"]["bearer"]["flows"]
    assert flows["password"] == {
        "tokenUrl": "/api/v1/auth/token",
        "refreshUrl": "/api/v1/auth/refresh",
    }


def test_every_operation_lists_what_the_gateway_itself_may_answer() -> None:
    document = {
        "paths": {
            "/products": {"get": {"responses": {"200": {"description": "A page"}}}},
            "/products/{id}": {"delete": {"responses": {"503": {"description": "Own words"}}}},
        }
    }
    paths = service_part("products", document)["paths"]
    listed, deleted = paths["/api/v1/products"]["get"], paths["/api/v1/products/{id}"]["delete"]
    assert {"200", "429", "502", "503", "504"} == set(listed["responses"])
    limited = listed["responses"]["429"]
    assert {"Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} == set(
        limited["headers"]
    )
    assert limited["content"] == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
    }
    assert deleted["responses"]["503"]["description"] == "Own words"  # the service's own kept
