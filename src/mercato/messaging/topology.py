"""Which consumer group takes which events: known to every publisher, not only to consumers.

A topic exchange drops a message for a group whose queue is not bound yet. On a first
deployment (or a `mercato up` whose services start together) an event published before its
consumer group ever connected would be lost, for instance the bootstrap admin's
``user.registered``. So every process that connects to RabbitMQ declares every group of
the deployment, queue and bindings (declarations are idempotent), before it publishes
anything.

Each context declares its own groups next to its consumers (``CONSUMER_GROUPS`` in its
``app.py``); whoever runs the services joins them with :func:`join_groups` and hands the
whole table to each service. The messaging package imports no bounded context.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

#: Consumer group name -> the event types its queue is bound to.
ConsumerGroups = Mapping[str, tuple[str, ...]]


def join_groups(declarations: Iterable[ConsumerGroups]) -> dict[str, tuple[str, ...]]:
    """One table of the groups several services declare; a group declared twice is an
    error (two services would share its queue)."""
    joined: dict[str, tuple[str, ...]] = {}
    for declared in declarations:
        for group, event_types in declared.items():
            if group in joined:
                raise ValueError(f"consumer group {group!r} is declared twice")
            joined[group] = tuple(event_types)
    return joined
