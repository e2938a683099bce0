"""What an Idempotency-Key keeps and gives back: the answer's media type, the refusal kept
without a request id, and its replay carrying the replaying request's id."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from mercato.orders.idempotency import (
    Answer,
    UnreleasedKeys,
    fingerprint_of,
    refusal,
    replay,
)
from mercato.orders.schemas import OrderItemIn, PlaceOrder
from mercato.platform.errors import Conflict
from mercato.platform.middleware import request_id_var


@pytest.fixture
def serving() -> Iterator[None]:
    """The request being served is ``req-2``, as the request-context middleware sets it."""
    token = request_id_var.set("req-2")
    yield
    request_id_var.reset(token)


def test_answers_know_their_media_type() -> None:
    assert Answer(201, "{}").media_type == "application/json"
    assert Answer(422, "{}").media_type == "application/problem+json"


def test_a_refusal_keeps_the_problem_but_no_request_id() -> None:
    kept = refusal(Conflict("busy"))
    assert kept.status == 409
    assert not kept.replayed
    assert json.loads(kept.body) == {
        "type": "urn:mercato:problem:conflict",
        "title": "Conflict",
        "status": 409,
        "detail": "busy",
        "request_id": None,
    }


@pytest.mark.usefixtures("serving")
def test_a_replayed_problem_carries_the_replaying_request_id() -> None:
    kept = refusal(Conflict("busy"))
    again = replay(kept.status, kept.body)
    assert again.replayed
    assert json.loads(again.body) == {**json.loads(kept.body), "request_id": "req-2"}
    # a body kept with some other request's id gets the replaying one's all the same
    older = replay(409, json.dumps({"status": 409, "request_id": "req-1"}))
    assert json.loads(older.body)["request_id"] == "req-2"


@pytest.mark.usefixtures("serving")
def test_a_replayed_order_is_the_very_same_text() -> None:
    body = '{"id": "o-1",  "total": "1.00"}'
    assert replay(201, body) == Answer(201, body, replayed=True)


def test_the_fingerprint_ignores_nothing_but_form() -> None:
    one = PlaceOrder(items=[OrderItemIn(product_id="a", quantity=1)])
    same = PlaceOrder.model_validate_json('{"items": [{"quantity": 1, "product_id": "a"}]}')
    other = PlaceOrder(items=[OrderItemIn(product_id="a", quantity=2)])
    assert fingerprint_of(one) == fingerprint_of(same) != fingerprint_of(other)


def test_unreleased_keys_are_bounded() -> None:
    keys = UnreleasedKeys(limit=2)
    for row_id in (1, 2, 3):
        keys.add(row_id)
    assert 3 in keys
    assert sum(row_id in keys for row_id in (1, 2, 3)) == 2
    keys.discard(3)
    assert 3 not in keys
