"""The one problem+json renderer: its body's shape, an AppError's body, its JSON, and the
response the services and the gateway send with it."""

from __future__ import annotations

import json
from decimal import Decimal

from mercato.platform.errors import (
    PROBLEM_JSON,
    AppError,
    Conflict,
    ServiceUnavailable,
    UnprocessableEntity,
    error_details,
    error_problem,
    problem,
    problem_details,
    problem_json,
)


def test_a_problem_names_its_type_title_status_detail_and_request() -> None:
    assert problem_details(
        504, detail="Too slow.", type_="urn:mercato:problem:upstream-timeout", request_id="r-1"
    ) == {
        "type": "urn:mercato:problem:upstream-timeout",
        "title": "Gateway Timeout",
        "status": 504,
        "detail": "Too slow.",
        "request_id": "r-1",
    }


def test_a_bare_status_is_about_blank_with_its_phrase_as_title_and_detail() -> None:
    assert problem_details(404) == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "Not Found",
        "request_id": None,
    }
    assert problem_details(599)["title"] == "Error"  # a status without a phrase


def test_an_app_error_renders_its_slug_title_detail_and_extras() -> None:
    error = UnprocessableEntity("Bad items.", errors=[{"loc": ["body"], "msg": "no"}])
    assert error_details(error, request_id="r-2") == {
        "type": "urn:mercato:problem:validation-error",
        "title": "Unprocessable Content",
        "status": 422,
        "detail": "Bad items.",
        "request_id": "r-2",
        "errors": [{"loc": ["body"], "msg": "no"}],
    }


def test_an_error_without_a_slug_is_typed_by_its_status() -> None:
    class Teapot(AppError):
        status, title = 418, "I'm a teapot"

    assert error_details(Teapot(), request_id=None)["type"] == "urn:mercato:problem:http-418"
    assert error_details(Teapot(), request_id=None)["detail"] == "I'm a teapot"


def test_the_json_is_compact_utf8_and_renders_decimals_as_text() -> None:
    body = problem_json(problem_details(409, detail="Déjà pris.", price=Decimal("1.50")))
    assert b'"detail":"D\xc3\xa9j\xc3\xa0 pris."' in body
    assert json.loads(body)["price"] == "1.50"


def test_an_error_response_carries_its_status_headers_and_media_type() -> None:
    response = error_problem(ServiceUnavailable("Down.", dependency="cache"), request_id="r-3")
    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["retry-after"] == "5"
    assert json.loads(response.body) == {
        "type": "urn:mercato:problem:dependency-unavailable",
        "title": "Service Unavailable",
        "status": 503,
        "detail": "Down.",
        "request_id": "r-3",
        "dependency": "cache",
    }


def test_a_response_and_an_error_body_are_the_same_bytes() -> None:
    """The gateway's own refusals and a stored orders answer render as the handlers do."""
    for error in (Conflict("busy"), UnprocessableEntity(errors=[{"loc": [], "msg": "no"}])):
        response = error_problem(error, request_id="r-4")
        assert response.body == problem_json(error_details(error, request_id="r-4"))
    plain = problem(502, detail="Unreachable.", request_id="r-5")
    assert plain.body == problem_json(problem_details(502, detail="Unreachable.", request_id="r-5"))
