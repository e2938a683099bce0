"""The products service's settings: its catalogue caches, its demo data, its database."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from mercato.platform.settings import DatabaseUrl


class ProductsSettings(BaseSettings):
    """The catalogue: its caches and its demo data (see README, "Products and caching")."""

    products_database_url: DatabaseUrl = Field(
        None, description="the products service's own database, over DATABASE_URL"
    )
    products_cache_enabled: bool = Field(True, description="cache-aside on product reads")
    products_cache_ttl: float = Field(300.0, gt=0, description="seconds a cached read lives")
    products_local_cache_ttl: float = Field(
        0.0,
        ge=0,
        description="with REDIS_URL: seconds a read also lives in each instance's memory, "
        "dropped on every instance by broadcast on writes (0: no local layer)",
    )
    product_max_age: int = Field(60, ge=0, description="Cache-Control max-age of one product")
    product_list_max_age: int = Field(30, ge=0, description="Cache-Control max-age of lists")
    seed_demo_catalogue: bool | None = Field(
        None, description="seed an empty catalogue at start-up (default: in development)"
    )
