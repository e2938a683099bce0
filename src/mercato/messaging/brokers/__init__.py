"""Broker backends behind one interface, chosen by ``BROKER_URL``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mercato.messaging.brokers.base import (
    Broker,
    BrokerUnavailable,
    Delivery,
    DeliveryCallback,
    OutgoingMessage,
    Settled,
    Subscription,
)


def in_process(url: str | None) -> bool:
    """Whether ``BROKER_URL`` names the in-process (memory) broker rather than a server."""
    return not url or url.startswith("memory:")


def create_broker(
    url: str | None,
    *,
    exchange: str = "mercato.events",
    queue_type: str = "classic",
    retry_delays: tuple[float, ...] = (),
    startup_grace: float = 0.0,
    known_groups: Mapping[str, Sequence[str]] | None = None,
) -> Broker:
    """The broker for ``url``: memory (unset), RabbitMQ (``amqp://``), Kafka (``kafka://``)."""
    if url is None or in_process(url):
        from mercato.messaging.brokers.memory import MemoryBroker

        return MemoryBroker(startup_grace)
    if url.startswith(("amqp://", "amqps://")):
        from mercato.messaging.brokers.rabbitmq import RabbitBroker

        return RabbitBroker(
            url,
            exchange=exchange,
            queue_type=queue_type,
            retry_delays=retry_delays,
            known_groups=known_groups,
        )
    if url.startswith("kafka://"):
        from mercato.messaging.brokers.kafka import KafkaBroker

        return KafkaBroker(url, topic=exchange)
    raise ValueError(f"BROKER_URL {url.split(':', 1)[0]}:// is not supported (amqp, kafka)")


__all__ = [
    "Broker",
    "BrokerUnavailable",
    "Delivery",
    "DeliveryCallback",
    "OutgoingMessage",
    "Settled",
    "Subscription",
    "create_broker",
    "in_process",
]
