"""Request and response models of the products API (API.md, "Products service")."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    model_validator,
)

from mercato.products.domain import DEFAULT_CATEGORY, DEFAULT_CURRENCY, MAX_PRICE, to_money

#: Money in: a decimal string or number (parsed without a float, see ``api.py``), two places.
Price = Annotated[
    Decimal,
    Field(gt=0, le=MAX_PRICE, max_digits=12, decimal_places=2, allow_inf_nan=False),
    AfterValidator(to_money),
]
#: Money out: always a string with two places, ``"19.99"``.
MoneyText = Annotated[
    Decimal, PlainSerializer(lambda value: f"{value:.2f}", return_type=str, when_used="json")
]


def no_nul(text: str) -> str:
    """PostgreSQL text cannot hold NUL: refuse it here (422) rather than fail there (500)."""
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    return text


Sku = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=64),
    AfterValidator(no_nul),
]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(no_nul),
]
Description = Annotated[str, StringConstraints(max_length=10_000), AfterValidator(no_nul)]
Category = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, to_lower=True, min_length=1, max_length=64, pattern=r"^[\w\- ]+$"
    ),
]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Stock = Annotated[int, Field(ge=0, le=2_000_000_000, strict=True)]


class ProductCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Sku
    name: Name
    price: Price
    description: Description = ""
    category: Category = DEFAULT_CATEGORY
    stock: Stock = 0
    currency: Currency = DEFAULT_CURRENCY


class ProductUpdate(BaseModel):
    """Any field but ``sku``; an explicit ``null`` is refused (nothing here is nullable)."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    price: Price | None = None
    description: Description | None = None
    category: Category | None = None
    stock: Stock | None = None
    currency: Currency | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> ProductUpdate:
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self

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
