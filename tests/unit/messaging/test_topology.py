"""The consumer groups every publisher declares are exactly the ones the contexts run."""

from __future__ import annotations

from mercato.messaging.topology import CONSUMER_GROUPS
from mercato.orders.notifications import notification_handlers
from mercato.orders.saga import saga_handlers
from mercato.products.service import stock_handlers
from mercato.users.service import handlers as profile_handlers


def test_the_known_groups_match_the_declared_handlers() -> None:
    declared = [
        profile_handlers,
        stock_handlers(cache=None),  # type: ignore[arg-type]
        saga_handlers,
        notification_handlers(outgoing=None, sender="shop@example.com"),  # type: ignore[arg-type]
    ]

    assert {h.consumer: sorted(h.event_types) for h in declared} == {
        group: sorted(types) for group, types in CONSUMER_GROUPS.items()
    }
