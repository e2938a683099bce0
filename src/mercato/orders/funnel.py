"""``orders_total{status}``: the orders funnel an operator watches (placed, then confirmed or
rejected, or cancelled).

An order counts once the transaction that moved it has committed (``uow.after_commit``), so
a rolled-back placement or a saga reply handled twice counts nothing. The funnel is made by
the composition root before the service's registry exists and bound to it at start-up
(:meth:`OrderFunnel.bind`); until then, and in tests that bind nothing, it counts nothing.
"""

from __future__ import annotations

from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter

from mercato.platform.db import UnitOfWork
from mercato.platform.observability import MetricFactory

FunnelStatus = Literal["placed", "confirmed", "rejected", "cancelled"]
STATUSES: Final[tuple[FunnelStatus, ...]] = ("placed", "confirmed", "rejected", "cancelled")


class OrderFunnel:
    def __init__(self) -> None:
        self._counter: Counter | None = None

    def bind(self, registry: CollectorRegistry) -> None:
        self._counter = MetricFactory(registry).counter(
            "orders_total",
            "Orders reaching a status: placed, confirmed, rejected, cancelled.",
            ["status"],
        )
        for status in STATUSES:  # every series exists from the start, at 0
            self._counter.labels(status)

    def count_on_commit(self, uow: UnitOfWork, status: FunnelStatus) -> None:
        """Count one order reaching ``status`` once ``uow`` has committed."""
        uow.after_commit(lambda: self._count(status))

    def _count(self, status: FunnelStatus) -> None:
        if self._counter is not None:
            self._counter.labels(status).inc()
