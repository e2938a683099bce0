"""Reliable messaging: envelope, transactional outbox, idempotent consumers, brokers.

Services use only these names::

    from mercato.messaging import Envelope, Handlers, publish, messaging_hook, MESSAGING_MIGRATIONS
"""

from mercato.messaging.broadcast import Broadcast
from mercato.messaging.consumer import Consumer, Handlers
from mercato.messaging.envelope import Envelope, traceparent_var
from mercato.messaging.events import EventData
from mercato.messaging.outbox import OutboxRelay, publish
from mercato.messaging.runtime import (
    MESSAGING_MIGRATIONS,
    MessagingRuntime,
    build_consumer,
    messaging_hook,
    run_messaging,
)

__all__ = [
    "MESSAGING_MIGRATIONS",
    "Broadcast",
    "Consumer",
    "Envelope",
    "EventData",
    "Handlers",
    "MessagingRuntime",
    "OutboxRelay",
    "build_consumer",
    "messaging_hook",
    "publish",
    "run_messaging",
    "traceparent_var",
]
