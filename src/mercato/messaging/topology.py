"""Which consumer group takes which events: known to every publisher, not only to consumers.

A topic exchange drops a message for a group whose queue is not bound yet. On a first
deployment (or a `mercato up` whose services start together) an event published before its
consumer group ever connected would be lost, for instance the bootstrap admin's
``user.registered``. So every process that connects to RabbitMQ declares every group below,
queue and bindings (declarations are idempotent), before it publishes anything.

This is data on purpose: the messaging package imports no bounded context. A unit test
checks it against the handlers the contexts really declare.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

CONSUMER_GROUPS: Final[Mapping[str, tuple[str, ...]]] = {
    "users": ("user.registered",),
    "products": ("order.placed", "order.cancelled"),
    "orders": ("stock.reserved", "stock.rejected"),
    "notifications": ("user.registered", "order.confirmed", "order.rejected"),
}
