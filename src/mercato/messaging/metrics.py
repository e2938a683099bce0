"""Messaging metrics, registered once in each service's registry (``context.registry``)."""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mercato.platform.observability import LATENCY_BUCKETS

_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, MessagingMetrics] = (
    weakref.WeakKeyDictionary()
)


class MessagingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.outbox_backlog = Gauge(
            "messaging_outbox_backlog",
            "Outbox rows committed but not yet sent.",
            ["service"],
            registry=registry,
        )
        self.outbox_oldest_age = Gauge(
            "messaging_outbox_oldest_age_seconds",
            "Age of the oldest unsent outbox row (0 when none).",
            ["service"],
            registry=registry,
        )
        self.published = Counter(
            "messaging_events_published_total",
            "Events the broker confirmed, by type.",
            ["service", "type"],
            registry=registry,
        )
        self.publish_failures = Counter(
            "messaging_publish_failures_total",
            "Relay batches the broker did not confirm (retried later).",
            ["service"],
            registry=registry,
        )
        self.consumed = Counter(
            "messaging_events_consumed_total",
            "Events settled by a consumer group, by type and outcome (handled, duplicate).",
            ["service", "consumer", "type", "outcome"],
            registry=registry,
        )
        self.retried = Counter(
            "messaging_events_retried_total",
            "Deliveries whose handler failed and will be retried.",
            ["service", "consumer", "type"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "messaging_events_dead_lettered_total",
            "Messages moved to the dead-letter queue, by type.",
            ["service", "consumer", "type"],
            registry=registry,
        )
        self.consumer_paused = Gauge(
            "messaging_consumer_paused",
            "1 while a consumer group waits for an unavailable dependency (database, cache, "
            "broker, upstream): its messages wait, none is dead-lettered.",
            ["service", "consumer"],
            registry=registry,
        )
        self.handler_latency = Histogram(
            "messaging_handler_duration_seconds",
            "Time to handle one event, transaction included.",
            ["service", "consumer", "type"],
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )

    @classmethod
    def of(cls, registry: CollectorRegistry) -> MessagingMetrics:
        """The metrics of ``registry``, created on first use (an app may restart its lifespan)."""
        metrics = _by_registry.get(registry)
        if metrics is None:
            metrics = _by_registry[registry] = cls(registry)
        return metrics
