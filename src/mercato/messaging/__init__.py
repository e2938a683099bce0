"""Reliable messaging: envelope, transactional outbox, idempotent consumers, brokers.

Services use only these names::

    from mercato.messaging import Envelope, Handlers, Outbox, messaging_hook, MESSAGING_MIGRATIONS

A composition root builds ``Outbox("<service>")``, hands it to the use cases that publish
(``await outbox.publish(uow, event, key=...)``) and to ``messaging_hook``, which runs its
relay.
"""

from mercato.messaging.broadcast import Broadcast
from mercato.messaging.brokers import Broker
from mercato.messaging.consumer import Consumer, Handlers
from mercato.messaging.envelope import Envelope, traceparent_var
from mercato.messaging.events import EventData
from mercato.messaging.outbox import Outbox, OutboxRelay
from mercato.messaging.runtime import (
    MESSAGING_MIGRATIONS,
    MessagingRuntime,
    SharedMessaging,
    build_consumer,
    in_process_broker,
    messaging_hook,
    run_messaging,
)
from mercato.messaging.topology import ConsumerGroups, join_groups

__all__ = [
    "MESSAGING_MIGRATIONS",
    "Broadcast",
    "Broker",
    "Consumer",
    "ConsumerGroups",
    "Envelope",
    "EventData",
    "Handlers",
    "MessagingRuntime",
    "Outbox",
    "OutboxRelay",
    "SharedMessaging",
    "build_consumer",
    "in_process_broker",
    "join_groups",
    "messaging_hook",
    "run_messaging",
    "traceparent_var",
]
