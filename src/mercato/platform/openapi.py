"""The error answers of every operation, written into a service's OpenAPI document.

Every error a service answers is problem+json (:mod:`mercato.platform.errors`), and some
of them can come from any operation: a malformed or oversized body (400, 413), a missing
or bad token on a protected one (401), headers too large (431), a dependency outage (503).
Routes document only their own answers, so :func:`document_problems` completes the
document in one place: each error response gets the ``application/problem+json`` body it
really has (``Problem``, or ``ValidationProblem`` with ``errors`` for a 422), FastAPI's
``application/json`` ``HTTPValidationError`` disappears, and the answers the platform
adds are listed. :func:`install_problem_docs` hooks it into a FastAPI app's ``openapi()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from fastapi import FastAPI

from mercato.platform.errors import PROBLEM_JSON

HTTP_METHODS: Final = frozenset({"get", "put", "post", "delete", "options", "head", "patch"})

_REF: Final = "#/components/schemas/"
PROBLEM_SCHEMAS: Final[dict[str, dict[str, Any]]] = {
    "Problem": {
        "type": "object",
        "title": "Problem",
        "description": "An RFC 9457 problem; `request_id` names the request it answers.",
        "required": ["type", "title", "status", "detail", "request_id"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "request_id": {"type": ["string", "null"]},
        },
    },
    "ValidationProblem": {
        "title": "ValidationProblem",
        "description": "A 422 problem: `errors` says what is wrong and where.",
        "allOf": [
            {"$ref": f"{_REF}Problem"},
            {
                "type": "object",
                "required": ["errors"],
                "properties": {
                    "errors": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["loc", "msg"],
                            "properties": {
                                "loc": {
                                    "type": "array",
                                    "items": {"type": ["string", "integer"]},
                                },
                                "msg": {"type": "string"},
                            },
                        },
                    }
                },
            },
        ],
    },
}
#: FastAPI's own 422 body, replaced by ``ValidationProblem``.
_FASTAPI_VALIDATION: Final = ("HTTPValidationError", "ValidationError")

_RETRY_AFTER: Final = {"description": "Seconds to wait.", "schema": {"type": "string"}}
_WWW_AUTHENTICATE: Final = {"description": "`Bearer`", "schema": {"type": "string"}}

#: What the platform may answer to any operation with a request body.
BODY_ANSWERS: Final[dict[str, dict[str, Any]]] = {
    "400": {"description": "The body is not well-formed (e.g. not JSON)."},
    "413": {"description": "The body is larger than the configured limit."},
    "422": {"description": "The request is not valid; see `errors`."},
}
#: What the platform may answer to any operation with parameters.
PARAMETER_ANSWERS: Final[dict[str, dict[str, Any]]] = {
    "422": {"description": "The request is not valid; see `errors`."},
}
#: What the platform may answer to an operation that takes a bearer token.
SECURED_ANSWERS: Final[dict[str, dict[str, Any]]] = {
    "401": {
        "description": "Missing or invalid access token.",
        "headers": {"WWW-Authenticate": _WWW_AUTHENTICATE},
    },
}
#: What the platform may answer to any operation.
ANY_ANSWERS: Final[dict[str, dict[str, Any]]] = {
    "431": {"description": "The request line and headers are larger than the limit."},
    "503": {
        "description": "A dependency is unavailable; try again shortly.",
        "headers": {"Retry-After": _RETRY_AFTER},
    },
}


#: Every answer the platform adds, whatever the operation (the reference lists them once).
SHARED_ANSWERS: Final = (BODY_ANSWERS, PARAMETER_ANSWERS, SECURED_ANSWERS, ANY_ANSWERS)


def operations(document: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every operation object of ``document``."""
    for item in document.get("paths", {}).values():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield operation


def add_answers(operation: dict[str, Any], answers: Mapping[str, Mapping[str, Any]]) -> None:
    """Add each of ``answers`` that ``operation`` does not document yet, as problem+json."""
    responses = operation.setdefault("responses", {})
    for status, answer in answers.items():
        if status not in responses:
            responses[status] = dict(answer)
        problem_body(status, responses[status])


def problem_body(status: str, response: dict[str, Any]) -> None:
    """An error response's body as it is sent: problem+json (``ValidationProblem`` for 422)."""
    if not status.isdigit() or int(status) < 400:
        return
    name = "ValidationProblem" if status == "422" else "Problem"
    response["content"] = {PROBLEM_JSON: {"schema": {"$ref": f"{_REF}{name}"}}}
    response.setdefault("description", name)


def document_problems(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (changed in place and returned) with every error answer documented."""
    for operation in operations(document):
        for status, response in operation.get("responses", {}).items():
            problem_body(str(status), response)
        if "requestBody" in operation:
            add_answers(operation, BODY_ANSWERS)
        if operation.get("parameters"):
            add_answers(operation, PARAMETER_ANSWERS)
        if operation.get("security"):
            add_answers(operation, SECURED_ANSWERS)
        add_answers(operation, ANY_ANSWERS)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_VALIDATION:
        schemas.pop(name, None)
    schemas.update(PROBLEM_SCHEMAS)
    return document


def install_problem_docs(
    app: FastAPI, *completions: Callable[[dict[str, Any]], dict[str, Any]]
) -> None:
    """Make ``app.openapi()`` answer its document with every error answer documented,
    then completed by each of ``completions`` (in place, returning the document)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = document_problems(build())
            for complete in completions:
                document = complete(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
