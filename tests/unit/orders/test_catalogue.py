"""Reading products for an order: one request for all of them, prices from the answer,
unknown products named by line, an outage passed on untouched."""

from __future__ import annotations

import json
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest

from mercato.orders.catalogue import ProductsCatalogue
from mercato.platform.errors import UnprocessableEntity
from mercato.platform.http import UpstreamResponse, UpstreamUnavailable

pytestmark = pytest.mark.anyio


class FakeClient:
    """``GET /products?ids=`` over a dict, like the products service."""

    def __init__(
        self, products: dict[str, dict[str, object]], *, down: bool = False, status: int = 200
    ) -> None:
        self.products = products
        self.down = down
        self.status = status
        self.paths: list[str] = []

    async def get(self, path: str) -> UpstreamResponse:
        self.paths.append(path)
        if self.down:
            raise UpstreamUnavailable("products")
        if self.status != 200:
            return UpstreamResponse(self.status, b'{"status": %d}' % self.status, {})
        query = parse_qs(urlsplit(path).query)
        ids = query["ids"][0].split(",")
        items = [{"id": pid, **self.products[pid]} for pid in ids if pid in self.products]
        page = {"items": items, "total": len(items), "limit": int(query["limit"][0]), "offset": 0}
        return UpstreamResponse(200, json.dumps(page).encode(), {})


async def test_products_are_read_with_their_price_and_currency() -> None:
    client = FakeClient({"a": {"name": "Mug", "price": "19.99", "currency": "EUR"}})
    priced = await ProductsCatalogue(client).priced(["a"])  # type: ignore[arg-type]
    assert priced["a"].price == Decimal("19.99")
    assert priced["a"].currency == "EUR"
    assert priced["a"].name == "Mug"


async def test_every_product_is_asked_for_once_in_one_encoded_request() -> None:
    client = FakeClient({pid: {"name": pid, "price": "1.00"} for pid in ("b", "a&limit=1")})
    priced = await ProductsCatalogue(client).priced(["b", "a&limit=1", "b"])  # type: ignore[arg-type]
    assert set(priced) == {"b", "a&limit=1"}
    assert client.paths == ["/products?ids=a%26limit%3D1,b&limit=2"]


async def test_unknown_products_are_named_by_their_line() -> None:
    client = FakeClient({"a": {"name": "A", "price": "1.00", "currency": "USD"}})
    with pytest.raises(UnprocessableEntity) as caught:
        await ProductsCatalogue(client).priced(["x", "a", "y"])  # type: ignore[arg-type]
    assert [e["loc"] for e in caught.value.extra["errors"]] == [
        ["body", "items", 0, "product_id"],
        ["body", "items", 2, "product_id"],
    ]


async def test_an_id_the_list_cannot_name_is_unknown_without_asking() -> None:
    client = FakeClient({"a": {"name": "A", "price": "1.00"}, "b": {"name": "B", "price": "1.00"}})
    with pytest.raises(UnprocessableEntity) as caught:
        await ProductsCatalogue(client).priced(["a,b"])  # type: ignore[arg-type]
    assert [e["loc"] for e in caught.value.extra["errors"]] == [["body", "items", 0, "product_id"]]
    assert client.paths == []


@pytest.mark.parametrize("status", [414, 422, 431])
async def test_a_list_the_catalogue_refuses_is_a_422(status: int) -> None:
    client = FakeClient({"a": {"name": "A", "price": "1.00"}}, status=status)
    with pytest.raises(UnprocessableEntity) as caught:
        await ProductsCatalogue(client).priced(["a"])  # type: ignore[arg-type]
    assert caught.value.extra["errors"] == [{"loc": ["body", "items"], "msg": "unknown products"}]


async def test_an_outage_is_passed_on() -> None:
    with pytest.raises(UpstreamUnavailable):
        await ProductsCatalogue(FakeClient({}, down=True)).priced(["a"])  # type: ignore[arg-type]
