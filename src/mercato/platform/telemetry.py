"""Tracing with OpenTelemetry: a tracer provider per service, fed by one span processor per
process, and the instrumentation of what a service calls.

Tracing is on when the settings name an exporter (``OTEL_EXPORTER_OTLP_ENDPOINT``, or
``OTEL_TRACES_EXPORTER``); off, nothing is instrumented: FastAPI's own telemetry is switched
off, engines and HTTP sessions get no listeners, and messaging makes no spans (the incoming
``traceparent`` is still passed on, see :mod:`mercato.platform.tracing`). The SDK, the
exporter and the instrumentations are the ``tracing`` extra, imported only when tracing is on.

Whoever runs the process builds one :class:`Tracing` (``mercato up``: one for its five
services) and hands it to each service's composition root, which takes its
:class:`ServiceTracing`: several services in one process keep their own ``service.name``
and share one exporter. A service built without one makes its own from its settings. The
other standard variables (``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_TRACES_SAMPLER``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_BSP_*``...) are read by the SDK itself.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, Final

import aiohttp
from fastapi.telemetry import TelemetryConfig
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import Tracer

from mercato.platform.settings import ConfigError, SharedSettings

if TYPE_CHECKING:  # the `tracing` extra: imported where used, and only when tracing is on
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["ServiceTracing", "Tracing"]

#: Probes and scrapes every few seconds: spans of them would drown the traces that matter.
UNTRACED_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})
#: The instrumentations record metrics too; Mercato's metrics are Prometheus'.
_NO_METRICS: Final = NoOpMeterProvider()
_TRACES_PATH: Final = "/v1/traces"
#: The instrumentation scopes of outgoing calls (SQL statements, HTTP requests).
_CALLS: Final = "opentelemetry.instrumentation."
_OFF: Final[TelemetryConfig] = {"tracing": False, "metrics": False, "logs": False}


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in UNTRACED_PATHS


class ServiceTracing:
    """One service's tracing: its tracer provider (``None`` when tracing is off) and the
    instrumentation of its app, database engines and HTTP sessions."""

    def __init__(self, service: str, provider: TracerProvider | None = None) -> None:
        self.service = service
        self.provider = provider

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    def tracer(self, name: str) -> Tracer | None:
        """A tracer for spans of Mercato's own (``name``: the module); ``None`` when off."""
        return None if self.provider is None else self.provider.get_tracer(name)

    def fastapi_config(self) -> TelemetryConfig:
        """``FastAPI(telemetry=...)``: server spans named by route template on this service's
        provider (not the global one); nothing at all when off."""
        if self.provider is None:
            return _OFF
        return {
            "tracer_provider": self.provider,
            "metrics": False,
            "logs": False,
            # Dependency and serialisation spans: noise beside the database and HTTP spans.
            "operation_spans": False,
            "auto_configure": False,
            "exclude": _untraced,
        }

    def instrument_engine(self, engine: AsyncEngine) -> None:
        """A client span for every statement ``engine`` runs (no-op when off)."""
        if self.provider is None:
            return
        from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

        # EngineTracer, not SQLAlchemyInstrumentor().instrument(engine=...): the instrumentor
        # is a process-wide singleton that instruments the first engine only, on the
        # global provider (opentelemetry-python-contrib issue 3977).
        tracer = self.provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
        usage = _NO_METRICS.get_meter("sqlalchemy").create_up_down_counter(
            "db.client.connections.usage"
        )
        EngineTracer(tracer, engine.sync_engine, usage)  # type: ignore[no-untyped-call]

    def http_trace_configs(self) -> list[aiohttp.TraceConfig]:
        """For ``aiohttp.ClientSession(trace_configs=...)``: a client span per request, its
        context sent as ``traceparent``; none when off."""
        if self.provider is None:
            return []
        from opentelemetry.instrumentation.aiohttp_client import create_trace_config

        return [create_trace_config(tracer_provider=self.provider, meter_provider=_NO_METRICS)]


class Tracing:
    """Where one process's spans go: ``processor`` (``None``: tracing off), shared by the
    provider of each service (:meth:`service`). The owner calls :meth:`shutdown` last."""

    def __init__(self, processor: SpanProcessor | None = None) -> None:
        self.processor = processor
        self._exported = None if processor is None else _calls_in_traces(processor)
        self._services: dict[str, ServiceTracing] = {}

    @property
    def enabled(self) -> bool:
        return self.processor is not None

    @classmethod
    def from_settings(cls, settings: SharedSettings) -> Tracing:
        """Off unless the settings choose an exporter; :class:`ConfigError` when they do
        and the ``tracing`` extra is not installed."""
        chosen = settings.traces_exporter
        if chosen is None:
            return cls()
        try:
            from opentelemetry.sdk.trace.export import (
                BatchSpanProcessor,
                ConsoleSpanExporter,
                SpanExporter,
            )
        except ImportError:
            raise ConfigError(
                [
                    "tracing is on (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER) but"
                    " its packages are not installed: install mercato[tracing]"
                ]
            ) from None
        exporter: SpanExporter
        if chosen == "console":
            exporter = ConsoleSpanExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=traces_endpoint(settings))
        return cls(BatchSpanProcessor(exporter))

    def service(self, name: str) -> ServiceTracing:
        """The tracing of service ``name``: a provider whose resource says
        ``service.name=name`` (and what ``OTEL_RESOURCE_ATTRIBUTES`` adds)."""
        found = self._services.get(name)
        if found is not None:
            return found
        provider = None
        if self._exported is not None:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider

            resource = Resource.create({"service.name": name, "service.namespace": "mercato"})
            # Not shut down with the service: the processor is the process's (shutdown()).
            provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            provider.add_span_processor(self._exported)
        found = self._services[name] = ServiceTracing(name, provider)
        return found

    def flush(self, timeout: float = 5.0) -> None:
        if self.processor is not None:
            self.processor.force_flush(int(timeout * 1000))

    def shutdown(self) -> None:
        """Send what is batched and stop the exporter; spans ended later are dropped."""
        if self.processor is not None:
            self.processor.shutdown()


def _calls_in_traces(processor: SpanProcessor) -> SpanProcessor:
    """``processor``, without the spans of instrumented calls made outside any trace: the
    relay's and the consumers' polls, housekeeping and start-up run statements every second
    that belong to no request or event, and would drown the traces that matter."""
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import ReadableSpan, Span
    from opentelemetry.sdk.trace import SpanProcessor as Base

    class CallsInTraces(Base):
        def on_start(self, span: Span, parent_context: Context | None = None) -> None:
            processor.on_start(span, parent_context)

        def on_end(self, span: ReadableSpan) -> None:
            scope = span.instrumentation_scope
            if span.parent is None and scope is not None and scope.name.startswith(_CALLS):
                return
            processor.on_end(span)

        def shutdown(self) -> None:
            processor.shutdown()

        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            return processor.force_flush(timeout_millis)

    return CallsInTraces()


def traces_endpoint(settings: SharedSettings) -> str | None:
    """The OTLP/HTTP URL spans are posted to: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as it
    is, else ``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/v1/traces`` (as the OTel specification
    says), else None (the exporter's default, ``http://localhost:4318/v1/traces``)."""
    if settings.otel_exporter_otlp_traces_endpoint:
        return settings.otel_exporter_otlp_traces_endpoint
    if settings.otel_exporter_otlp_endpoint:
        return settings.otel_exporter_otlp_endpoint.rstrip("/") + _TRACES_PATH
    return None
