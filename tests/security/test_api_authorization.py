"""Object- and function-level authorization, mass assignment and data exposure
(OWASP API1, API3, API5 of 2023), through the gateway."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from support.processes import RunningMercato
from support.security_api import (
    API,
    Account,
    Seen,
    operations,
    path_pattern,
    registration,
    resolve,
    settled,
    undocumented_fields,
    unique_name,
)

FOREIGN_IDS = 200
#: Fields a client must never set: each is refused (422) in every write body.
PRIVILEGED = {"roles": ["admin"], "is_admin": True, "status": "confirmed", "total": "0.01"}
#: Names a response must never carry, whatever its schema says.
#: The members of a problem (docs/api.md, conventions): no stack trace, SQL or host rides along.
PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance", "request_id", "errors"}
NEVER_SHOWN = {"password", "password_hash", "hashed_password", "is_active", "is_admin"}


def place_order(http: httpx.Client, buyer: Account, product: dict[str, Any]) -> dict[str, Any]:
    body = {"items": [{"product_id": product["id"], "quantity": 1}]}
    placed = http.post(f"{API}/orders", json=body, headers=buyer.headers)
    assert placed.status_code == 201, placed.text
    order: dict[str, Any] = placed.json()
    return order


def test_bola_foreign_order_and_profile_ids_are_404_and_change_nothing(
    http: httpx.Client,
    mercato: RunningMercato,
    new_customer: Callable[[], Account],
    product: dict[str, Any],
) -> None:
    owners = [new_customer() for _ in range(4)]
    orders = {owner.id: place_order(http, owner, product) for owner in owners}
    attacker = new_customer()
    before = {
        owner.id: (
            settled(http, owner, orders[owner.id]["id"]),
            http.get(f"{API}/users/me", headers=owner.headers).json(),
        )
        for owner in owners
    }
    # Foreign ids: the real ones of the other users, and random ones in the same format.
    order_ids = [order["id"] for order in orders.values()]
    user_ids = [owner.id for owner in owners]
    order_ids += [str(uuid.uuid4()) for _ in range(FOREIGN_IDS - len(order_ids))]
    user_ids += [str(uuid.uuid4()) for _ in range(FOREIGN_IDS - len(user_ids))]
    for order_id, user_id in zip(order_ids, user_ids, strict=True):
        attempts = [
            http.get(f"{API}/orders/{order_id}", headers=attacker.headers),
            http.post(f"{API}/orders/{order_id}/cancel", headers=attacker.headers),
            http.get(f"{API}/users/{user_id}", headers=attacker.headers),
        ]
        assert [answer.status_code for answer in attempts] == [404, 404, 404], [
            answer.text for answer in attempts
        ]
        # In a body: an order "for" another user, a profile change "of" another user.
        line = {"product_id": product["id"], "quantity": 1}
        attempts = [
            http.post(
                f"{API}/orders",
                json={"items": [line], "user_id": user_id},
                headers=attacker.headers,
            ),
            http.patch(
                f"{API}/users/me", json={"id": user_id, "full_name": "X"}, headers=attacker.headers
            ),
        ]
        assert [answer.status_code for answer in attempts] == [422, 422]
    # Straight at the services, past the gateway: the same answers.
    for owner in owners:
        direct = [
            http.get(
                f"{mercato.url('orders')}/orders/{orders[owner.id]['id']}", headers=attacker.headers
            ),
            http.get(f"{mercato.url('users')}/users/{owner.id}", headers=attacker.headers),
        ]
        assert [answer.status_code for answer in direct] == [404, 404]
    after = {
        owner.id: (
            http.get(f"{API}/orders/{orders[owner.id]['id']}", headers=owner.headers).json(),
            http.get(f"{API}/users/me", headers=owner.headers).json(),
        )
        for owner in owners
    }
    assert after == before
    mine = http.get(f"{API}/orders", headers=attacker.headers).json()
    assert mine["total"] == 0
    assert http.get(f"{API}/users/me", headers=attacker.headers).json()["full_name"] != "X"


def test_every_admin_operation_of_the_schema_is_403_to_a_customer(
    http: httpx.Client,
    mercato: RunningMercato,
    schema: dict[str, Any],
    customer: Account,
    product: dict[str, Any],
) -> None:
    admin_ops = [op for op in operations(schema) if op.admin_only]
    # The schema marks them (AdminUser's scope); the count guards the derivation itself.
    assert {(op.method, op.path) for op in admin_ops} >= {
        ("POST", f"{API}/products"),
        ("GET", f"{API}/users"),
    }
    for op in admin_ops:
        body = {"name": "x"} if op.method in {"POST", "PATCH", "PUT"} else None
        url = op.url(product_id=product["id"])
        # Through the gateway, and straight at the service that serves it (/api/v1/<s>/...
        # is <s>:/<s>/...): the service decides, not the gateway.
        service = url.removeprefix(f"{API}/").split("/")[0]
        direct = f"{mercato.url(service)}{url.removeprefix(API)}"
        for target in (url, direct):
            answer = http.request(op.method, target, json=body, headers=customer.headers)
            assert answer.status_code == 403, (op.method, target, answer.text)
        assert "403" in op.spec["responses"], f"{op.method} {op.path} does not document 403"
    # Parameters documented as admin-only: the same refusal.
    for op in operations(schema):
        for parameter in op.spec.get("parameters", []):
            if parameter.get("description", "").startswith("admin"):
                answer = http.request(
                    op.method,
                    op.url(),
                    params={parameter["name"]: "true"},
                    headers=customer.headers,
                )
                assert answer.status_code == 403, (op.path, parameter["name"], answer.text)
    unchanged = http.get(f"{API}/products/{product['id']}").json()
    assert unchanged == product | {"updated_at": unchanged["updated_at"]}


@pytest.mark.parametrize("field", [*PRIVILEGED, "id"])
def test_mass_assignment_is_refused_in_every_write_body(
    http: httpx.Client,
    field: str,
    admin: Account,
    customer: Account,
    product: dict[str, Any],
) -> None:
    value = PRIVILEGED.get(field, str(uuid.uuid4()))
    # register: refused, and nobody by that name exists afterwards
    body = registration()
    assert http.post(f"{API}/auth/register", json={**body, field: value}).status_code == 422
    login = {"username": body["username"], "password": body["password"]}
    assert http.post(f"{API}/auth/login", json=login).status_code == 401
    # PATCH /users/me
    profile = http.get(f"{API}/users/me", headers=customer.headers).json()
    patch = {"full_name": "Changed Name", field: value}
    assert http.patch(f"{API}/users/me", json=patch, headers=customer.headers).status_code == 422
    assert http.get(f"{API}/users/me", headers=customer.headers).json() == profile
    me = http.get(f"{API}/auth/me", headers=customer.headers).json()
    assert "admin" not in me["roles"]
    # POST and PATCH /products (as the administrator: the body is the risk, not the role)
    new = {"sku": unique_name("SKU"), "name": unique_name("Mass"), "price": "1.00", field: value}
    assert http.post(f"{API}/products", json=new, headers=admin.headers).status_code == 422
    assert http.get(f"{API}/products", params={"q": new["name"]}).json()["total"] == 0
    change = {"name": "Renamed", field: value}
    url = f"{API}/products/{product['id']}"
    assert http.patch(url, json=change, headers=admin.headers).status_code == 422
    assert http.get(url).json() == product
    # POST /orders, at the top and in a line
    line = {"product_id": product["id"], "quantity": 1}
    for order in ({"items": [line], field: value}, {"items": [{**line, field: value}]}):
        assert http.post(f"{API}/orders", json=order, headers=customer.headers).status_code == 422
    assert http.get(f"{API}/orders", headers=customer.headers).json()["total"] == 0


def open_objects(schema: dict[str, Any], node: dict[str, Any], where: str) -> list[str]:
    """The object schemas under ``node`` that would take a field they do not name."""
    node = dict(resolve(schema, node))
    found = []
    if node.get("type") == "object" or "properties" in node:
        if node.get("additionalProperties") is not False:
            found.append(where)
        for name, child in node.get("properties", {}).items():
            found += open_objects(schema, child, f"{where}.{name}")
    if "items" in node:
        found += open_objects(schema, node["items"], f"{where}[]")
    for choice in node.get("anyOf", []) + node.get("oneOf", []):
        found += open_objects(schema, choice, where)
    return found


def test_every_json_request_body_of_the_schema_refuses_unknown_fields(
    schema: dict[str, Any],
) -> None:
    """The rule behind the mass-assignment check, for every write the schema lists (a new
    endpoint included): each JSON body object, nested ones too, is closed."""
    bodies = [
        (op, media["schema"])
        for op in operations(schema)
        for name, media in op.spec.get("requestBody", {}).get("content", {}).items()
        if name == "application/json"
    ]
    assert len(bodies) >= 5
    open_ = [
        path for op, body in bodies for path in open_objects(schema, body, f"{op.method} {op.path}")
    ]
    assert not open_, open_


def test_reads_show_no_hash_and_no_internal_flag(
    http: httpx.Client, admin: Account, customer: Account, product: dict[str, Any]
) -> None:
    """Every read the API offers, as a customer and as the administrator; the shapes are
    checked against the schema at the end of the session (test_api_exposure)."""
    reads = [
        ("/auth/me", customer),
        ("/users/me", customer),
        (f"/users/{customer.id}", customer),
        (f"/users/{customer.id}", admin),
        ("/users", admin),
        ("/orders?all=true", admin),
        (f"/products/{product['id']}", customer),
    ]
    for path, who in reads:
        answer = http.get(f"{API}{path}", headers=who.headers)
        assert answer.status_code == 200, (path, answer.text)
        assert not NEVER_SHOWN & set(keys_of(answer.json())), (path, answer.json())


def keys_of(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in keys_of(item)}
    if isinstance(value, list):
        return {key for item in value for key in keys_of(item)}
    return set()


def test_answers_carry_only_documented_fields(schema: dict[str, Any], secrets_seen: Seen) -> None:
    """Runs last: every JSON answer of the session (all tests), against the response schema
    of its operation and status in /openapi.json."""
    patterns = [(op, path_pattern(op.path)) for op in operations(schema)]
    checked = 0
    problems = []
    for answer in secrets_seen.answers:
        matches = [
            op
            for op, pattern in patterns
            if op.method == answer.method and pattern.match(answer.path)
        ]
        # A literal path (/users/me) wins over a template (/users/{user_id}).
        matches.sort(key=lambda op: op.path.count("{"))
        if answer.media_type == "application/problem+json":
            extra_members = set(answer.body or {}) - PROBLEM_FIELDS
            if extra_members:
                problems.append(f"{answer.method} {answer.path} {answer.status}: {extra_members}")
            checked += 1
            continue
        if not matches or answer.body is None:
            continue
        documented = matches[0].spec["responses"].get(str(answer.status))
        content = (documented or {}).get("content", {})
        media = content.get("application/json") or content.get("application/problem+json")
        if media is None or "schema" not in media:
            continue  # an undocumented status is the schema fuzzing's finding (sec-schema)
        checked += 1
        extra = undocumented_fields(schema, media["schema"], answer.body)
        if extra or NEVER_SHOWN & keys_of(answer.body):
            problems.append(f"{answer.method} {answer.path} {answer.status}: {extra}")
    if not checked:
        pytest.skip("no other security test ran in this session")
    assert not problems, "\n".join(sorted(set(problems)))
