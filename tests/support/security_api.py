"""What the black-box security suite (tests/security) shares: accounts on a live `mercato up`,
the registry of every secret and JSON answer the suite saw, the live instance's signing key,
and the schema walks (admin operations, string parameters, documented fields).

Every HTTP client of the suite is made by :func:`client`, so every answer is recorded in
:class:`Seen` and checked against the schema at the end of the session, and every password
and token handed out is remembered there for the log check.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from mercato.platform.security.keys import KeySet, SigningKey
from support.processes import RunningMercato

API = "/api/v1"
PASSWORD = "Secur1tySuite"  # one password for the suite's customers: it is in the registry


@dataclass
class Answer:
    """One JSON answer the suite received."""

    method: str
    path: str
    status: int
    media_type: str
    body: Any


@dataclass
class Seen:
    """Everything the suite handed out or received, for the end-of-session checks."""

    secrets: set[str] = field(default_factory=set)
    instances: list[RunningMercato] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)

    def add(self, *values: str) -> None:
        self.secrets.update(value for value in values if value)

    def record(self, response: httpx.Response) -> None:
        media_type = response.headers.get("content-type", "").split(";")[0]
        if media_type not in {"application/json", "application/problem+json"}:
            return
        response.read()
        body = response.json() if response.content else None
        request = response.request
        self.answers.append(
            Answer(request.method, request.url.path, response.status_code, media_type, body)
        )


def client(
    base_url: str, seen: Seen, *, source: str | None = None, timeout: float = 30
) -> httpx.Client:
    """A client whose every JSON answer is recorded in ``seen``; ``source`` is the local
    address it connects from (any of 127.0.0.0/8), so a check gets a client address of its
    own and its own rate-limit budget."""
    transport = httpx.HTTPTransport(local_address=source) if source else None
    return httpx.Client(
        base_url=base_url,
        timeout=timeout,
        transport=transport,
        event_hooks={"response": [seen.record]},
    )


def async_client(base_url: str, seen: Seen, *, timeout: float = 60) -> httpx.AsyncClient:
    async def record(response: httpx.Response) -> None:
        await response.aread()
        seen.record(response)

    limits = httpx.Limits(max_connections=100)
    return httpx.AsyncClient(
        base_url=base_url, timeout=timeout, limits=limits, event_hooks={"response": [record]}
    )


@dataclass(frozen=True)
class Account:
    username: str
    password: str
    id: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def unique_name(prefix: str = "sec") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def registration(username: str | None = None, password: str = PASSWORD) -> dict[str, str]:
    name = username or unique_name()
    return {"username": name, "email": f"{name}@example.com", "password": password}


def log_in(http: httpx.Client, seen: Seen, username: str, password: str) -> dict[str, Any]:
    seen.add(password)
    pair = http.post(f"{API}/auth/login", json={"username": username, "password": password})
    assert pair.status_code == 200, pair.text
    tokens: dict[str, Any] = pair.json()
    seen.add(tokens["access_token"], tokens["refresh_token"])
    return tokens


def sign_up(http: httpx.Client, seen: Seen, password: str = PASSWORD) -> Account:
    """A new customer, registered and signed in."""
    body = registration(password=password)
    seen.add(password)
    registered = http.post(f"{API}/auth/register", json=body)
    assert registered.status_code == 201, registered.text
    tokens = log_in(http, seen, body["username"], password)
    return Account(
        body["username"],
        password,
        registered.json()["id"],
        tokens["access_token"],
        tokens["refresh_token"],
    )


def settled(http: httpx.Client, owner: Account, order_id: str, within: float = 15) -> Any:
    """The owner's order once its saga has moved it out of ``pending``."""
    deadline = time.monotonic() + within
    while True:
        order = http.get(f"{API}/orders/{order_id}", headers=owner.headers).json()
        if order["status"] != "pending":
            return order
        assert time.monotonic() < deadline, f"order {order_id} still pending after {within} s"
        time.sleep(0.05)


def signing_key(running: RunningMercato) -> SigningKey:
    """The key a running embedded `mercato up` signs access tokens with (generated in
    DATA_DIR at its first start)."""
    return KeySet.from_pem((Path(running.data_dir) / "jwt-keys.pem").read_text()).signing


# --- the schema ---------------------------------------------------------------------------

METHODS = ("get", "post", "put", "patch", "delete")


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    spec: Mapping[str, Any]

    @property
    def admin_only(self) -> bool:
        """The operation's security requirements name the ``admin`` scope (role)."""
        return any(
            "admin" in scopes for req in self.spec.get("security", []) for scopes in req.values()
        )

    def url(self, **values: str) -> str:
        return re.sub(
            r"\{(\w+)\}", lambda match: values.get(match[1], str(uuid.uuid4())), self.path
        )


def operations(schema: Mapping[str, Any]) -> Iterator[Operation]:
    for path, item in schema["paths"].items():
        for method in METHODS:
            if method in item:
                yield Operation(method.upper(), path, item[method])


def resolve(schema: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        name = node["$ref"].removeprefix("#/components/schemas/")
        node = schema["components"]["schemas"][name]
    return node


def is_string(schema: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    node = resolve(schema, node)
    if node.get("type") == "string":
        return True
    return any(is_string(schema, choice) for choice in node.get("anyOf", []))


def undocumented_fields(
    schema: Mapping[str, Any], node: Mapping[str, Any], value: Any, where: str = "$"
) -> list[str]:
    """The JSON paths of ``value`` that ``node`` (a response schema) does not document."""
    node = resolve(schema, node)
    choices = node.get("anyOf") or node.get("oneOf")
    if choices:
        found = [undocumented_fields(schema, choice, value, where) for choice in choices]
        return min(found, key=len)
    if isinstance(value, dict) and "properties" in node:
        extra = [f"{where}.{key}" for key in value if key not in node["properties"]]
        for key, item in value.items():
            if key in node["properties"]:
                extra += undocumented_fields(
                    schema, node["properties"][key], item, f"{where}.{key}"
                )
        return extra
    if isinstance(value, list) and "items" in node:
        return [
            path
            for index, item in enumerate(value)
            for path in undocumented_fields(schema, node["items"], item, f"{where}[{index}]")
        ]
    return []


def path_pattern(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(path)) + "$")
