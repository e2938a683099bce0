"""Broker backends behind one interface, chosen by ``BROKER_URL``."""

from __future__ import annotations

from mercato.messaging.brokers.base import (
    Broker,
    BrokerOptions,
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


def create_broker(url: str | None, options: BrokerOptions | None = None) -> Broker:
    """The broker for ``url``: memory (unset), RabbitMQ (``amqp://``), Kafka (``kafka://``),
    each taking from ``options`` what applies to it."""
    options = options or BrokerOptions()
    if url is None or in_process(url):
        from mercato.messaging.brokers.memory import MemoryBroker

        return MemoryBroker(options.startup_grace)
    if url.startswith(("amqp://", "amqps://")):
        from mercato.messaging.brokers.rabbitmq import RabbitBroker

        return RabbitBroker(url, options)
    if url.startswith("kafka://"):
        from mercato.messaging.brokers.kafka import KafkaBroker

        return KafkaBroker(url, topic=options.exchange)
    raise ValueError(f"BROKER_URL {url.split(':', 1)[0]}:// is not supported (amqp, kafka)")


__all__ = [
    "Broker",
    "BrokerOptions",
    "BrokerUnavailable",
    "Delivery",
    "DeliveryCallback",
    "OutgoingMessage",
    "Settled",
    "Subscription",
    "create_broker",
    "in_process",
]
