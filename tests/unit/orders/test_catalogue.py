"""Reading products for an order: prices from the answers, unknown products named by line,
an outage passed on untouched."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from mercato.orders.service import Answer, ProductsCatalogue, problem_body
from mercato.platform.errors import Conflict, UnprocessableEntity
from mercato.platform.http import UpstreamResponse, UpstreamUnavailable

pytestmark = pytest.mark.anyio


class FakeClient:
    def __init__(self, products: dict[str, dict[str, object]], *, down: bool = False) -> None:
        self.products = products
        self.down = down
        self.paths: list[str] = []

    async def get(self, path: str) -> UpstreamResponse:
        self.paths.append(path)
        if self.down:
            raise UpstreamUnavailable("products")
        product = self.products.get(path.removeprefix("/products/"))
        if product is None:
            return UpstreamResponse(404, b'{"status": 404}', {})
        return UpstreamResponse(200, json.dumps(product).encode(), {})


async def test_products_are_read_with_their_price_and_currency() -> None:
    client = FakeClient({"a": {"name": "Mug", "price": "19.99", "currency": "EUR"}})
    priced = await ProductsCatalogue(client).priced(["a"])  # type: ignore[arg-type]
    assert priced["a"].price == Decimal("19.99")
    assert priced["a"].currency == "EUR"
    assert priced["a"].name == "Mug"


async def test_ids_are_quoted_into_the_path() -> None:
    client = FakeClient({})
    with pytest.raises(UnprocessableEntity):
        await ProductsCatalogue(client).priced(["../admin?x=1"])  # type: ignore[arg-type]
    assert client.paths == ["/products/..%2Fadmin%3Fx%3D1"]


async def test_unknown_products_are_named_by_their_line() -> None:
    client = FakeClient({"a": {"name": "A", "price": "1.00", "currency": "USD"}})
    with pytest.raises(UnprocessableEntity) as caught:
        await ProductsCatalogue(client).priced(["x", "a", "y"])  # type: ignore[arg-type]
    assert [e["loc"] for e in caught.value.extra["errors"]] == [
        ["body", "items", 0, "product_id"],
        ["body", "items", 2, "product_id"],
    ]


async def test_an_outage_is_passed_on() -> None:
    with pytest.raises(UpstreamUnavailable):
        await ProductsCatalogue(FakeClient({}, down=True)).priced(["a"])  # type: ignore[arg-type]


def test_answers_know_their_media_type_and_errors_keep_their_shape() -> None:
    assert Answer(201, "{}").media_type == "application/json"
    assert Answer(422, "{}").media_type == "application/problem+json"
    body = json.loads(problem_body(Conflict("busy")))
    assert body == {
        "type": "urn:mercato:problem:conflict",
        "title": "Conflict",
        "status": 409,
        "detail": "busy",
    }
