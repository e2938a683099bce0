"""Tracing set-up: on only when the settings choose an exporter; off, nothing is installed."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from fastapi import APIRouter
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.ext.asyncio import create_async_engine

from mercato.platform.app import create_service_app
from mercato.platform.settings import ConfigError
from mercato.platform.telemetry import Tracing, traces_endpoint
from mercato.platform.tracing import current_traceparent, traceparent_var
from mercato.settings import Settings, load_settings

pytestmark = pytest.mark.anyio


def settings(**values: object) -> Settings:
    return load_settings(env_file=None, environment="testing", **values)


@pytest.fixture
def tracing_on() -> Iterator[Tracing]:
    tracing = Tracing.from_settings(settings(otel_exporter_otlp_endpoint="http://127.0.0.1:9"))
    yield tracing
    tracing.shutdown()


def statement_listeners(engine: object) -> int:
    return len(engine.sync_engine.dispatch.before_cursor_execute)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("values", "exporter"),
    [
        ({}, None),
        ({"otel_exporter_otlp_endpoint": "http://collector:4318"}, "otlp"),
        ({"otel_exporter_otlp_traces_endpoint": "http://collector:4318/v1/traces"}, "otlp"),
        ({"otel_traces_exporter": "otlp"}, "otlp"),  # the exporter's default endpoint
        ({"otel_traces_exporter": "console"}, "console"),
        ({"otel_exporter_otlp_endpoint": "http://c:4318", "otel_traces_exporter": "none"}, None),
        ({"otel_exporter_otlp_endpoint": "http://c:4318", "otel_sdk_disabled": True}, None),
    ],
)
def test_the_settings_choose_the_exporter_and_none_means_off(
    values: dict[str, object], exporter: str | None
) -> None:
    assert settings(**values).traces_exporter == exporter


def test_spans_go_to_the_endpoint_the_specification_derives() -> None:
    assert traces_endpoint(settings()) is None
    base = settings(otel_exporter_otlp_endpoint="http://collector:4318/")
    assert traces_endpoint(base) == "http://collector:4318/v1/traces"
    whole = settings(
        otel_exporter_otlp_endpoint="http://collector:4318",
        otel_exporter_otlp_traces_endpoint="http://traces:4318/custom",
    )
    assert traces_endpoint(whole) == "http://traces:4318/custom"


def test_a_protocol_that_is_not_installed_is_refused_at_start_up() -> None:
    with pytest.raises(ConfigError, match=r"OTEL_EXPORTER_OTLP_PROTOCOL: .*http/protobuf"):
        settings(otel_exporter_otlp_protocol="grpc")


async def test_off_by_default_installs_nothing() -> None:
    tracing = Tracing.from_settings(settings())
    assert not tracing.enabled
    service = tracing.service("orders")
    assert service.provider is None
    assert service.tracer("mercato.messaging") is None
    assert service.http_trace_configs() == []
    assert service.fastapi_config() == {"tracing": False, "metrics": False, "logs": False}
    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    service.instrument_engine(engine)
    assert statement_listeners(engine) == 0
    await engine.dispose()


def test_a_service_app_built_with_tracing_off_has_fastapis_telemetry_off() -> None:
    app = create_service_app(settings(), "orders", title="t", routers=[APIRouter()])
    assert app._telemetry["tracing"] is False  # where FastAPI keeps it
    assert app._telemetry["metrics"] is False


async def test_on_each_service_gets_its_own_name_and_the_instrumentation(
    tracing_on: Tracing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "not-this")
    assert isinstance(tracing_on.processor, BatchSpanProcessor)
    orders, products = tracing_on.service("orders"), tracing_on.service("products")
    assert tracing_on.service("orders") is orders
    for service, name in ((orders, "orders"), (products, "products")):
        assert service.provider is not None
        attributes = service.provider.resource.attributes
        assert attributes["service.name"] == name
        assert attributes["deployment.environment"] == "staging"
    assert len(orders.http_trace_configs()) == 1
    assert orders.fastapi_config()["tracer_provider"] is orders.provider
    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    orders.instrument_engine(engine)
    assert statement_listeners(engine) == 1
    await engine.dispose()


async def test_statements_are_spans_of_the_span_that_runs_them_and_only_then() -> None:
    exported = InMemorySpanExporter()
    service = Tracing(SimpleSpanProcessor(exported)).service("orders")
    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    service.instrument_engine(engine)
    tracer = service.tracer("test")
    assert tracer is not None
    with tracer.start_as_current_span("use case") as parent:
        async with engine.connect() as connection:
            await connection.exec_driver_sql("SELECT 1")
    async with engine.connect() as connection:  # a poll, outside any trace: not exported
        await connection.exec_driver_sql("SELECT 2")
    await engine.dispose()
    (statement,) = [s for s in exported.get_finished_spans() if s.name.startswith("SELECT")]
    assert statement.parent is not None
    assert statement.parent.span_id == parent.get_span_context().span_id
    assert statement.resource.attributes["service.name"] == "orders"


def test_tracing_on_without_its_packages_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace.export", None)
    with pytest.raises(ConfigError, match=r"mercato\[tracing\]"):
        Tracing.from_settings(settings(otel_traces_exporter="console"))


def test_the_traceparent_is_the_current_spans_else_the_one_passed_through() -> None:
    passed = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    token = traceparent_var.set(passed)
    try:
        assert current_traceparent() == passed  # tracing off: passed on as it came
        service = Tracing(SimpleSpanProcessor(InMemorySpanExporter())).service("orders")
        tracer = service.tracer("t")
        assert tracer is not None
        with tracer.start_as_current_span("publish") as span:
            context = span.get_span_context()
            assert current_traceparent() == (
                f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
            )
    finally:
        traceparent_var.reset(token)


def test_the_services_of_one_process_share_its_tracing_each_under_its_name() -> None:
    from mercato.serving import build_app

    tracing = Tracing(SimpleSpanProcessor(InMemorySpanExporter()))
    for service in ("gateway", "orders", "products"):
        app = build_app(service, settings(), tracing=tracing)
        provider = app._telemetry["tracer_provider"]  # where FastAPI keeps it
        assert provider is tracing.service(service).provider
        assert provider.resource.attributes["service.name"] == service
