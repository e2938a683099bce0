"""The consumer groups every publisher declares are exactly the ones the contexts run."""

from __future__ import annotations

import pytest

from mercato.messaging import Outbox, join_groups
from mercato.orders.app import CONSUMER_GROUPS as ORDERS_GROUPS
from mercato.orders.notifications import notification_handlers
from mercato.orders.saga import saga_handlers
from mercato.products.app import CONSUMER_GROUPS as PRODUCTS_GROUPS
from mercato.products.service import stock_handlers
from mercato.serving import consumer_groups
from mercato.users.app import CONSUMER_GROUPS as USERS_GROUPS
from mercato.users.service import handlers as profile_handlers


def test_each_context_declares_the_groups_its_handlers_form() -> None:
    outbox = Outbox("test")
    declared = [
        (USERS_GROUPS, [profile_handlers]),
        (PRODUCTS_GROUPS, [stock_handlers(outbox, cache=None)]),  # type: ignore[arg-type]
        (
            ORDERS_GROUPS,
            [
                saga_handlers(outbox),
                notification_handlers(outgoing=None, sender="shop@example.com"),  # type: ignore[arg-type]
            ],
        ),
    ]

    for groups, handlers in declared:
        assert {h.consumer: sorted(h.event_types) for h in handlers} == {
            group: sorted(types) for group, types in groups.items()
        }


def test_every_service_process_knows_every_group() -> None:
    assert consumer_groups() == {**USERS_GROUPS, **PRODUCTS_GROUPS, **ORDERS_GROUPS}


def test_a_group_declared_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        join_groups([{"users": ("a",)}, {"users": ("b",)}])
