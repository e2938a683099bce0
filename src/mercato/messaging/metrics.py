"""Messaging metrics, registered once in each service's registry (``context.registry``)."""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry

from mercato.platform.observability import MetricFactory

_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, MessagingMetrics] = (
    weakref.WeakKeyDictionary()
)


class MessagingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        new = MetricFactory(registry)
        # Every worker of a service samples the same outbox table: the largest sample counts.
        self.outbox_backlog = new.gauge(
            "messaging_outbox_backlog",
            "Outbox rows committed but not yet sent.",
            ["service"],
            multiprocess_mode="livemax",
        )
        self.outbox_oldest_age = new.gauge(
            "messaging_outbox_oldest_age_seconds",
            "Age of the oldest unsent outbox row (0 when none).",
            ["service"],
            multiprocess_mode="livemax",
        )
        self.published = new.counter(
            "messaging_events_published_total",
            "Events the broker confirmed, by type.",
            ["service", "type"],
        )
        self.publish_failures = new.counter(
            "messaging_publish_failures_total",
            "Relay batches the broker did not confirm (retried later).",
            ["service"],
        )
        self.consumed = new.counter(
            "messaging_events_consumed_total",
            "Events settled by a consumer group, by type and outcome (handled, duplicate).",
            ["service", "consumer", "type", "outcome"],
        )
        self.retried = new.counter(
            "messaging_events_retried_total",
            "Deliveries whose handler failed and will be retried.",
            ["service", "consumer", "type"],
        )
        self.dead_lettered = new.counter(
            "messaging_events_dead_lettered_total",
            "Messages moved to the dead-letter queue, by type.",
            ["service", "consumer", "type"],
        )
        self.consumer_paused = new.gauge(
            "messaging_consumer_paused",
            "1 while a consumer group waits for an unavailable dependency (database, cache, "
            "broker, upstream): its messages wait, none is dead-lettered.",
            ["service", "consumer"],
            multiprocess_mode="livemax",
        )
        self.consumer_lag = new.gauge(
            "messaging_consumer_lag",
            "Messages of a consumer group's queue not yet settled (waiting, retrying or in "
            "flight), sampled every MESSAGING_LAG_INTERVAL seconds.",
            ["service", "queue"],
            multiprocess_mode="livemax",
        )
        self.handler_latency = new.histogram(
            "messaging_handler_duration_seconds",
            "Time to handle one event, transaction included.",
            ["service", "consumer", "type"],
        )

    @classmethod
    def of(cls, registry: CollectorRegistry) -> MessagingMetrics:
        """The metrics of ``registry``, created on first use (an app may restart its lifespan)."""
        metrics = _by_registry.get(registry)
        if metrics is None:
            metrics = _by_registry[registry] = cls(registry)
        return metrics
