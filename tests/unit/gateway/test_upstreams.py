"""The route table from settings, and choosing an instance."""

from __future__ import annotations

import pytest

from mercato.gateway.upstreams import Upstream, build_upstreams, route_table
from mercato.platform.resilience import CircuitOpenError
from mercato.platform.settings import ConfigError
from mercato.settings import load_settings

pytestmark = pytest.mark.anyio


def test_default_routes_are_the_four_services_from_their_urls() -> None:
    table = route_table(
        load_settings(
            env_file=None,
            environment="testing",
            products_url="http://p1:8003/, http://p2:8003",
            orders_port=9002,
        )
    )
    assert table["products"] == ["http://p1:8003", "http://p2:8003"]
    assert table["orders"] == ["http://127.0.0.1:9002"]
    assert set(table) == {"auth", "users", "products", "orders"}


def test_gateway_routes_from_the_environment_replace_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_ROUTES", '{"search": "http://s1:9000,http://s2:9000/"}')
    table = route_table(load_settings(env_file=None, environment="testing"))
    assert table == {"search": ["http://s1:9000", "http://s2:9000"]}


def test_a_route_without_an_http_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="GATEWAY_ROUTES"):
        load_settings(env_file=None, environment="testing", gateway_routes={"x": "ftp://nope"})


async def make(urls: list[str], threshold: int = 1) -> Upstream:
    upstreams = build_upstreams(
        {"svc": urls},
        load_settings(env_file=None, environment="testing", upstream_fail_threshold=threshold),
    )
    return upstreams["svc"]


async def test_instances_take_turns() -> None:
    upstream = await make(["http://a", "http://b", "http://c"])
    try:
        chosen = []
        for _ in range(6):
            instance, permit = upstream.choose()
            permit.success()
            chosen.append(instance.url)
        assert chosen == ["http://a", "http://b", "http://c"] * 2
    finally:
        await upstream.close()


async def test_an_open_instance_is_skipped_and_all_open_is_refused() -> None:
    upstream = await make(["http://a", "http://b"])
    try:
        instance, permit = upstream.choose()
        assert instance.url == "http://a"
        permit.failure()  # threshold 1: a opens
        picks = []
        for _ in range(3):
            chosen, ok = upstream.choose()
            ok.success()
            picks.append(chosen.url)
        assert picks == ["http://b"] * 3
        _, last = upstream.choose()
        last.failure()  # b opens too
        with pytest.raises(CircuitOpenError) as refused:
            upstream.choose()
        assert refused.value.status == 503
    finally:
        await upstream.close()


async def test_a_retry_avoids_the_instance_that_just_failed() -> None:
    upstream = await make(["http://a", "http://b"], threshold=5)
    try:
        first, permit = upstream.choose()
        permit.failure()
        second, again = upstream.choose(exclude=first)
        again.success()
        assert second is not first
    finally:
        await upstream.close()


@pytest.mark.parametrize("keep_alive", [2, 5, 75])
async def test_the_gateway_drops_an_idle_connection_before_the_service_would(
    keep_alive: int,
) -> None:
    settings = load_settings(env_file=None, environment="testing", keep_alive_timeout=keep_alive)
    upstreams = build_upstreams({"orders": ["http://127.0.0.1:9002"]}, settings)
    try:
        connector = upstreams["orders"].session.connector
        assert connector is not None
        # aiohttp has no public accessor for it.
        assert 0 < connector._keepalive_timeout < keep_alive  # type: ignore[attr-defined]
    finally:
        await upstreams["orders"].close()
