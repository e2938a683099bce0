"""The demo catalogue `mercato seed` loads: 120 products over eight categories.

Generated deterministically (the same skus, names and prices on every run), so seeding is
idempotent by sku and the data is the same on every machine.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from mercato.products.schemas import ProductCreate

# category: (sku prefix, [(item, what it is for, base price in dollars)], [qualities]); the
# qualities go from the cheapest to the dearest.
_CATEGORIES: Final[dict[str, tuple[str, list[tuple[str, str, int]], list[str]]]] = {
    "electronics": (
        "ELE",
        [
            ("Wireless Earbuds", "clear calls and deep bass on the go", 79),
            ("Bluetooth Speaker", "room-filling sound that survives a splash", 59),
            ("USB-C Charger", "fast charging for a phone and a laptop at once", 29),
            ("Mechanical Keyboard", "tactile switches for long typing sessions", 119),
            ("4K Monitor", "sharp text and true colours for work and play", 349),
        ],
        ["Compact", "Pro", "Studio"],
    ),
    "books": (
        "BOO",
        [
            ("Field Guide to Birds", "identifying six hundred species at a glance", 24),
            ("Cookbook of Slow Food", "recipes that reward patience", 29),
            ("History of Navigation", "how sailors crossed oceans before satellites", 19),
            ("Introduction to Databases", "tables, transactions and why they matter", 39),
            ("Collected Short Stories", "twenty tales from around the world", 14),
        ],
        ["Paperback", "Hardcover", "Illustrated"],
    ),
    "kitchen": (
        "KIT",
        [
            ("Chef's Knife", "a balanced blade that holds its edge", 69),
            ("Cast Iron Skillet", "even heat from stove top to oven", 39),
            ("Pour-Over Coffee Set", "a clean, bright cup every morning", 34),
            ("Bamboo Cutting Board", "gentle on knives and easy to clean", 19),
            ("Stainless Saucepan", "a tight lid and a heavy base", 49),
        ],
        ["Everyday", "Classic", "Professional"],
    ),
    "outdoors": (
        "OUT",
        [
            ("Hiking Backpack", "a ventilated back panel and many pockets", 89),
            ("Two-Person Tent", "pitches in minutes and sheds heavy rain", 199),
            ("Trekking Poles", "light aluminium that folds into a pack", 49),
            ("Insulated Bottle", "keeps water cold for a full day", 24),
            ("Camping Lantern", "warm light with a week of battery", 29),
        ],
        ["Trail", "Alpine", "Ultralight"],
    ),
    "clothing": (
        "CLO",
        [
            ("Merino T-Shirt", "soft wool that stays fresh for days", 49),
            ("Rain Jacket", "waterproof, breathable and packable", 129),
            ("Denim Jeans", "a straight cut in sturdy cotton", 69),
            ("Wool Socks", "cushioned soles for long walks", 14),
            ("Fleece Hoodie", "warm layers without the weight", 59),
        ],
        ["Essential", "Heritage", "Performance"],
    ),
    "toys": (
        "TOY",
        [
            ("Building Blocks Set", "five hundred pieces for endless builds", 39),
            ("Wooden Train Set", "tracks, bridges and a little station", 59),
            ("Puzzle of the World Map", "a thousand pieces of geography", 19),
            ("Remote Control Car", "all-terrain wheels and a rechargeable battery", 49),
            ("Plush Bear", "soft, washable and ready for hugs", 17),
        ],
        ["Junior", "Classic", "Deluxe"],
    ),
    "garden": (
        "GAR",
        [
            ("Pruning Shears", "clean cuts on branches up to two centimetres", 24),
            ("Watering Can", "a long spout for careful watering", 19),
            ("Raised Garden Bed", "cedar boards that resist rot", 149),
            ("Herb Seed Kit", "basil, thyme, parsley and more", 12),
            ("Garden Kneeler", "a padded seat that flips into a kneeler", 34),
        ],
        ["Eco", "Home", "Master"],
    ),
    "sports": (
        "SPO",
        [
            ("Yoga Mat", "a grippy surface and generous cushioning", 29),
            ("Adjustable Dumbbells", "from two to twenty kilograms in seconds", 189),
            ("Running Shoes", "responsive foam for daily miles", 119),
            ("Jump Rope", "ball bearings for smooth, fast turns", 12),
            ("Tennis Racket", "a forgiving sweet spot and light frame", 89),
        ],
        ["Starter", "Club", "Elite"],
    ),
}


def _price(base: int, quality_index: int, seed: int) -> Decimal:
    """``base`` dollars scaled by quality (x1, x1.5, x2.25), ending in .99 or .49."""
    whole = max(base * 3**quality_index // 2**quality_index + seed % 5 - 1, 1)
    return Decimal(whole * 100 + (49 if seed % 4 == 0 else 99)) / 100


def demo_catalogue() -> list[ProductCreate]:
    """The demo products, always the same ones in the same order."""
    products: list[ProductCreate] = []
    for category_index, (category, spec) in enumerate(_CATEGORIES.items()):
        prefix, items, qualities = spec
        for item_index, (item, purpose, base) in enumerate(items):
            for quality_index, quality in enumerate(qualities):
                seed = category_index * 100 + item_index * 10 + quality_index + 1
                products.append(
                    ProductCreate(
                        sku=f"{prefix}-{item_index + 1:02d}{quality_index + 1}",
                        name=f"{quality} {item}",
                        description=f"The {quality.lower()} {item.lower()}: {purpose}.",
                        price=_price(base, quality_index, seed),
                        category=category,
                        stock=(seed * 37) % 120 + 5,
                    )
                )
    return products
