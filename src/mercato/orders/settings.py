"""The orders service's settings: its calls to other services, idempotency keys,
notifications and its database."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings

from mercato.platform.settings import DatabaseUrl


class OrdersSettings(BaseSettings):
    """Orders, service-to-service calls and notifications (see README, "Orders")."""

    orders_database_url: DatabaseUrl = Field(
        None, description="the orders service's own database, over DATABASE_URL"
    )
    service_call_timeout: float = Field(5.0, gt=0, description="seconds per call to a service")
    service_call_connect_timeout: float = Field(1.0, gt=0, description="seconds to connect")
    service_call_retries: int = Field(2, ge=0, le=5, description="extra tries, idempotent calls")
    service_call_backoff: float = Field(0.05, gt=0, description="first retry delay, seconds")
    service_call_backoff_max: float = Field(1.0, gt=0, description="longest retry delay")
    service_call_pool_size: int = Field(100, ge=1, description="connections per upstream")
    circuit_failure_threshold: int = Field(5, ge=1, description="failures that open a breaker")
    circuit_reset_timeout: float = Field(10.0, gt=0, description="seconds before a trial call")
    idempotency_key_ttl: float = Field(
        86_400.0, ge=86_400, description="seconds an Idempotency-Key is kept (at least 24 h)"
    )
    idempotency_lock_timeout: float = Field(
        60.0, gt=0, description="seconds before an in-flight key of a crashed request is retaken"
    )
    idempotency_prune_interval: float = Field(
        600.0, gt=0, description="seconds between deletions of expired keys"
    )
    notifications_in_process: bool = Field(
        True, description="run the notification worker inside the orders service"
    )
