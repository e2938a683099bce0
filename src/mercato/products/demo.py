"""The demo catalogue `mercato seed` loads: 120 products over eight categories.

Generated deterministically from ``demo_catalogue.toml`` (the same skus, names and prices on
every run), so seeding is idempotent by sku and the data is the same on every machine.
"""

from __future__ import annotations

import tomllib
from decimal import Decimal
from importlib.resources import files

from mercato.products.schemas import ProductCreate


def _price(base: int, quality_index: int, seed: int) -> Decimal:
    """``base`` dollars scaled by quality (x1, x1.5, x2.25), ending in .99 or .49."""
    whole = max(base * 3**quality_index // 2**quality_index + seed % 5 - 1, 1)
    return Decimal(whole * 100 + (49 if seed % 4 == 0 else 99)) / 100


def demo_catalogue() -> list[ProductCreate]:
    """The demo products, always the same ones in the same order."""
    source = files("mercato.products").joinpath("demo_catalogue.toml").read_text("utf-8")
    products: list[ProductCreate] = []
    for category_index, (category, spec) in enumerate(tomllib.loads(source).items()):
        for item_index, (item, purpose, base) in enumerate(spec["items"]):
            for quality_index, quality in enumerate(spec["qualities"]):
                seed = category_index * 100 + item_index * 10 + quality_index + 1
                products.append(
                    ProductCreate(
                        sku=f"{spec['sku_prefix']}-{item_index + 1:02d}{quality_index + 1}",
                        name=f"{quality} {item}",
                        description=f"The {quality.lower()} {item.lower()}: {purpose}.",
                        price=_price(base, quality_index, seed),
                        category=category,
                        stock=(seed * 37) % 120 + 5,
                    )
                )
    return products
