"""The storefront's settings: its sessions and pages."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings


class StorefrontSettings(BaseSettings):
    storefront_enabled: bool = Field(
        True, description="serve the HTML storefront at the gateway root"
    )
    session_ttl: int = Field(
        8 * 3600,
        ge=60,
        le=30 * 24 * 3600,
        description="seconds a storefront session lives after its last change "
        "(kept in Redis when REDIS_URL is set, else in the gateway's memory)",
    )
    storefront_page_size: int = Field(
        12, ge=1, le=100, description="products per catalogue and search page"
    )
