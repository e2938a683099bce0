"""Injection (OWASP API8 of 2023, misconfiguration that lets input be code): SQL payloads in
every string parameter the schema lists, and newlines that would forge a log line."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any
from urllib.parse import quote

import httpx

from support.processes import RunningMercato
from support.security_api import API, Account, is_string, operations, unique_name

PAYLOADS = (
    "' OR 1=1--",
    "' OR '1'='1",
    '"; DROP TABLE products; --',
    "%' --",
    "%",
    "_",
    "1 UNION SELECT username, password_hash FROM users--",
    "') UNION ALL SELECT NULL,NULL,NULL--",
    "1; SELECT pg_sleep(5)--",
)
#: A value of the same kind that matches nothing: the payload may not find more than it.
NOTHING = "zzqnothingmatcheszzq"


def count(answer: httpx.Response) -> int | None:
    """How many rows a list answer holds (``None`` for an answer that is not a list)."""
    if answer.status_code != 200:
        return None
    body = answer.json()
    return body.get("total") if isinstance(body, dict) else None


def test_sql_payloads_in_every_string_query_parameter_find_nothing_and_break_nothing(
    http: httpx.Client, schema: dict[str, Any], admin: Account
) -> None:
    tried = 0
    for op in operations(schema):
        if op.method != "GET":
            continue
        for parameter in op.spec.get("parameters", []):
            if parameter["in"] != "query" or not is_string(schema, parameter.get("schema", {})):
                continue
            url = op.url()
            baseline = http.get(url, params={parameter["name"]: NOTHING}, headers=admin.headers)
            assert baseline.status_code < 500, (op.path, parameter["name"], baseline.text)
            for payload in PAYLOADS:
                answer = http.get(url, params={parameter["name"]: payload}, headers=admin.headers)
                where = (op.path, parameter["name"], payload, answer.text[:300])
                assert answer.status_code < 500, where
                found, expected = count(answer), count(baseline)
                if found is not None and expected is not None:
                    assert found <= expected, where
                tried += 1
    assert tried >= len(PAYLOADS) * 3  # q, category, sort, ids... are all walked


def test_sql_payloads_as_path_ids_are_404_or_422(
    http: httpx.Client, schema: dict[str, Any], admin: Account
) -> None:
    templated = [op for op in operations(schema) if op.method == "GET" and "{" in op.path]
    assert templated
    for op in templated:
        for payload in PAYLOADS:
            answer = http.get(
                op.url(**dict.fromkeys(names(op.path), quote(payload, safe=""))),
                headers=admin.headers,
            )
            assert answer.status_code in {404, 422}, (op.path, payload, answer.text[:300])


def names(path: str) -> list[str]:
    return re.findall(r"\{(\w+)\}", path)


def test_a_newline_in_a_username_cannot_forge_a_log_line(
    http: httpx.Client, mercato: RunningMercato
) -> None:
    forged_id = f"forged-{uuid.uuid4()}"
    forged = json.dumps(
        {"event": "security.login_ok", "level": "info", "service": "auth", "user_id": forged_id}
    )
    for newline in ("\n", "\r\n", "\u2028"):
        username = f"{unique_name()}{newline}{forged}"
        body = {"username": username, "email": "x@example.com", "password": "Val1dPassword"}
        assert http.post(f"{API}/auth/register", json=body).status_code == 422
        login = {"username": username, "password": "Val1dPassword"}
        assert http.post(f"{API}/auth/login", json=login).status_code in {401, 422}
    lines = mercato.log_lines_with(forged_id, services={"auth"}, within=5)
    # The failed logins are logged, the username escaped inside one value of a real entry.
    assert any(forged_id in str(line.get("username")) for line in lines), lines
    assert all(line.get("user_id") != forged_id for line in lines), lines
    assert all(line.get("event") != "security.login_ok" for line in lines), lines
