"""Request and response models of the products API (API.md, "Products service")."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from mercato.platform.schemas import DecimalText, Integral, StrictModel, Text, Trimmed
from mercato.products.domain import DEFAULT_CATEGORY, DEFAULT_CURRENCY, MAX_PRICE, to_money

#: A price as text: more than 0, at most :data:`MAX_PRICE` (ten digits before the point),
#: at most two places, no leading zero (``"19.99"``, ``"0.5"``, ``"7"``).
PRICE_TEXT: Final = r"[1-9][0-9]{0,9}(?:\.[0-9]{1,2})?|0\.(?:[1-9][0-9]?|0[1-9])"
#: Money in: a decimal string with at most two places (``"19.99"``), more than 0.
Price = Annotated[
    Decimal,
    DecimalText(PRICE_TEXT, "a decimal string with at most two places, more than 0"),
    Field(gt=0, le=MAX_PRICE, max_digits=12, decimal_places=2, allow_inf_nan=False),
    AfterValidator(to_money),
]
#: Money out: always a string with two places, ``"19.99"``.
MoneyText = Annotated[
    Decimal, PlainSerializer(lambda value: f"{value:.2f}", return_type=str, when_used="json")
]


Sku = Annotated[Trimmed, StringConstraints(min_length=1, max_length=64)]
Name = Annotated[Trimmed, StringConstraints(min_length=1, max_length=200)]
Description = Annotated[Text, StringConstraints(max_length=10_000)]
#: A category: ASCII letters, digits, ``_``, ``-`` and inner spaces (stored lower-case).
CATEGORY_TEXT: Final = r"^[A-Za-z0-9_\-](?:[A-Za-z0-9_\- ]*[A-Za-z0-9_\-])?$"
Category = Annotated[
    str,
    StringConstraints(to_lower=True, min_length=1, max_length=64, pattern=CATEGORY_TEXT),
]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Stock = Annotated[int, Field(ge=0, le=2_000_000_000), Integral]


#: ``GET /products?ids=``: at most this many comma-separated ids, each 1..64 characters.
MAX_IDS: Final = 100
MAX_ID_LENGTH: Final = 64
#: The longest ``ids`` text that can be valid: every id at its longest, with the commas.
MAX_IDS_TEXT: Final = MAX_IDS * (MAX_ID_LENGTH + 1) - 1


#: The characters of an id in ``ids``: those a URL carries as they are (a UUID has no
#: other), so that the longest valid list stays within the request-line limit.
ID_CHARACTERS: Final = re.compile(r"[A-Za-z0-9._~-]+")
#: The ``ids`` text the schema documents, which :func:`product_ids` takes.
_ONE_ID: Final = rf"[A-Za-z0-9._~-]{{1,{MAX_ID_LENGTH}}}"
IDS_TEXT: Final = rf"^{_ONE_ID}(?:,{_ONE_ID}){{0,{MAX_IDS - 1}}}$"


def product_ids(text: str) -> frozenset[str]:
    """The distinct ids of an ``ids`` query parameter (``a,b,c``; a repeated id counts
    once); ValueError when there are more than :data:`MAX_IDS`, or one is empty, longer
    than :data:`MAX_ID_LENGTH` or has a character outside :data:`ID_CHARACTERS`."""
    ids = text.split(",")
    if len(ids) > MAX_IDS:
        raise ValueError(f"at most {MAX_IDS} ids")
    if not all(0 < len(one) <= MAX_ID_LENGTH for one in ids):
        raise ValueError(f"comma-separated ids of 1 to {MAX_ID_LENGTH} characters, none empty")
    if not all(ID_CHARACTERS.fullmatch(one) for one in ids):
        raise ValueError("ids of letters, digits and `.`, `_`, `~`, `-` only")
    return frozenset(ids)


class ProductCreate(StrictModel):
    sku: Sku
    name: Name
    price: Price
    description: Description = ""
    category: Category = DEFAULT_CATEGORY
    stock: Stock = 0
    currency: Currency = DEFAULT_CURRENCY


class ProductUpdate(StrictModel):
    """Any field but ``sku``; an explicit ``null`` is refused (nothing here is nullable, and
    the schema says so: ``None`` is only the "not given" of Python)."""

    name: Name | SkipJsonSchema[None] = None
    price: Price | SkipJsonSchema[None] = None
    description: Description | SkipJsonSchema[None] = None
    category: Category | SkipJsonSchema[None] = None
    stock: Stock | SkipJsonSchema[None] = None
    currency: Currency | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _no_nulls(self) -> ProductUpdate:
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self

    @staticmethod
    def _no_defaults(schema: dict[str, Any]) -> None:
        for field in schema.get("properties", {}).values():
            field.pop("default", None)  # a field left out is left as it is

    model_config = ConfigDict(json_schema_extra=_no_defaults)

    def changes(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class ProductOut(BaseModel):
    id: str
    sku: str
    name: str
    description: str
    price: MoneyText
    currency: str
    category: str
    stock: int
    created_at: datetime
    updated_at: datetime


class ProductPage(BaseModel):
    items: list[ProductOut]
    total: int
    limit: int
    offset: int
