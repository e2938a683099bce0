"""`mercato status`: the figures computed from two canned scrapes, and how they are shown."""

# ruff: noqa: E501 - the canned exposition text keeps Prometheus' one sample per line

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from mercato import status
from mercato.settings import Settings
from mercato.status import Figures, Scrape, Target, figures, quantile, render, targets

BEFORE = """\
# TYPE http_requests_total counter
http_requests_total{service="gateway",method="GET",route="/api/v1/products/{path}",status="200"} 100
http_requests_total{service="gateway",method="GET",route="/api/v1/orders/{path}",status="503"} 0
http_requests_total{service="gateway",method="GET",route="/metrics",status="200"} 7
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{service="gateway",method="GET",route="/api/v1/products/{path}",le="0.01"} 50
http_request_duration_seconds_bucket{service="gateway",method="GET",route="/api/v1/products/{path}",le="0.1"} 100
http_request_duration_seconds_bucket{service="gateway",method="GET",route="/api/v1/products/{path}",le="+Inf"} 100
http_request_duration_seconds_count{service="gateway",method="GET",route="/api/v1/products/{path}"} 100
http_request_duration_seconds_sum{service="gateway",method="GET",route="/api/v1/products/{path}"} 2.0
http_request_duration_seconds_bucket{service="gateway",method="GET",route="/metrics",le="0.01"} 0
http_request_duration_seconds_bucket{service="gateway",method="GET",route="/metrics",le="0.1"} 0
http_request_duration_seconds_bucket{service="gateway",method="GET",route="/metrics",le="+Inf"} 7
# TYPE products_cache_reads_total counter
products_cache_reads_total{outcome="local"} 10
products_cache_reads_total{outcome="miss"} 10
# TYPE messaging_events_published_total counter
messaging_events_published_total{service="orders",type="order.placed"} 4
# TYPE orders_total counter
orders_total{status="placed"} 4
"""

# Two seconds later: 20 more requests (4 of them 503, 3 more scrapes of /metrics).
AFTER = """\
# TYPE http_requests_total counter
http_requests_total{service="gateway",method="GET",route="/api/v1/products/{path}",status="200"} 116
http_requests_total{service="gateway",method="GET",route="/api/v1/orders/{path}",status="503"} 4
http_requests_total{service="gateway",method="GET",route="/metrics",status="200"} 10
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{service="gateway",method="GET",route="/api/v1/products/{path}",le="0.01"} 60
http_request_duration_seconds_bucket{service="gateway",method="GET",route="/api/v1/products/{path}",le="0.1"} 116
http_request_duration_seconds_bucket{service="gateway",method="GET",route="/api/v1/products/{path}",le="+Inf"} 120
http_request_duration_seconds_count{service="gateway",method="GET",route="/api/v1/products/{path}"} 120
http_request_duration_seconds_sum{service="gateway",method="GET",route="/api/v1/products/{path}"} 9.0
http_request_duration_seconds_bucket{service="gateway",method="GET",route="/metrics",le="0.01"} 0
http_request_duration_seconds_bucket{service="gateway",method="GET",route="/metrics",le="0.1"} 0
http_request_duration_seconds_bucket{service="gateway",method="GET",route="/metrics",le="+Inf"} 10
# TYPE products_cache_reads_total counter
products_cache_reads_total{outcome="local"} 16
products_cache_reads_total{outcome="shared"} 2
products_cache_reads_total{outcome="miss"} 12
# TYPE upstream_circuit_state gauge
upstream_circuit_state{address="127.0.0.1:8003",service="gateway",upstream="products"} 0.0
upstream_circuit_state{address="127.0.0.1:8002",service="gateway",upstream="orders"} 2.0
# TYPE messaging_outbox_backlog gauge
messaging_outbox_backlog{service="orders"} 3.0
# TYPE messaging_outbox_oldest_age_seconds gauge
messaging_outbox_oldest_age_seconds{service="orders"} 75.5
# TYPE messaging_events_published_total counter
messaging_events_published_total{service="orders",type="order.placed"} 10
# TYPE messaging_events_dead_lettered_total counter
messaging_events_dead_lettered_total{service="orders",consumer="orders",type="stock.reserved"} 1
# TYPE messaging_consumer_lag gauge
messaging_consumer_lag{service="orders",queue="orders"} 5.0
messaging_consumer_lag{service="orders",queue="notifications"} 2.0
# TYPE orders_total counter
orders_total{status="placed"} 10
orders_total{status="confirmed"} 7
orders_total{status="rejected"} 2
orders_total{status="cancelled"} 1
# TYPE auth_login_attempts_total counter
auth_login_attempts_total{outcome="success"} 5
auth_login_attempts_total{outcome="failure"} 3
auth_login_attempts_total{outcome="rate_limited"} 1
# TYPE rate_limit_refusals_total counter
rate_limit_refusals_total{service="gateway",limit="api"} 2
rate_limit_refusals_total{service="gateway",limit="user"} 1
"""


@pytest.fixture
def row() -> Figures:
    return figures("gateway", Scrape.parse(BEFORE, at=10.0), Scrape.parse(AFTER, at=12.0))


def test_rates_and_ratios_are_of_the_window_and_leave_the_probes_out(row: Figures) -> None:
    assert row.up
    assert row.requests == 120  # the total since start, without /metrics
    assert row.request_rate == pytest.approx(10.0)  # 20 requests in 2 s
    assert row.error_ratio == pytest.approx(0.2)  # 4 of those 20 were 5xx
    assert row.cache_hit_ratio == pytest.approx(0.8)  # 8 hits (6 local, 2 shared) of 10 reads
    assert row.event_rates["published"] == pytest.approx(3.0)
    assert row.event_totals == {"published": 10, "dead-lettered": 1}  # what is exported


def test_latency_quantiles_come_from_the_window_buckets(row: Figures) -> None:
    # The window's 20 observations: 10 under 10 ms, 6 in (10 ms, 100 ms], 4 above.
    assert row.p50 == pytest.approx(0.01)  # rank 10 ends the first bucket
    assert row.p99 == pytest.approx(0.1)  # rank 19.8 is in +Inf: the largest finite bound


def test_gauges_and_totals_are_read_from_the_last_scrape(row: Figures) -> None:
    assert [(b.upstream, b.address, b.state) for b in row.breakers] == [
        ("products", "127.0.0.1:8003", 0),
        ("orders", "127.0.0.1:8002", 2),
    ]
    assert row.outbox_backlog == 3
    assert row.outbox_oldest_age == 75.5
    assert row.consumer_lag == 7  # both groups' queues
    assert row.orders == {"placed": 10, "confirmed": 7, "rejected": 2, "cancelled": 1}
    assert row.logins == {"success": 5, "failure": 3, "rate_limited": 1}
    assert row.refusals == 3


def test_what_a_process_does_not_export_is_absent_not_zero() -> None:
    bare = Scrape.parse("# TYPE http_requests_total counter\n", at=1.0)
    row = figures("users", bare, Scrape.parse("# TYPE http_requests_total counter\n", at=3.0))
    assert row.request_rate == 0.0
    assert row.error_ratio is None  # no request in the window: no ratio
    assert (row.p50, row.p99) == (None, None)
    assert (row.outbox_backlog, row.consumer_lag) == (None, None)
    assert (row.orders, row.logins, row.breakers) == ({}, {}, ())


def test_a_process_that_did_not_answer_is_down_with_the_reason() -> None:
    row = figures("orders", Scrape.parse(BEFORE, 1.0), Scrape(2.0, error="ConnectionRefusedError"))
    assert not row.up
    assert row.error == "ConnectionRefusedError"


def test_a_first_scrape_that_failed_gives_no_rates_but_the_gauges() -> None:
    row = figures("gateway", Scrape(1.0, error="timeout"), Scrape.parse(AFTER, 3.0))
    assert row.up
    assert row.request_rate is None
    assert row.error_ratio is None
    assert row.outbox_backlog == 3


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, [(0.1, 0.0), (0.2, 10.0), (float("inf"), 10.0)], 0.15),
        (0.9, [(0.1, 5.0), (1.0, 10.0), (float("inf"), 10.0)], 0.82),
        (0.99, [(0.1, 5.0), (float("inf"), 10.0)], 0.1),
        (0.5, [(0.1, 0.0), (float("inf"), 0.0)], None),
        (0.5, [], None),
    ],
)
def test_quantile_interpolates_inside_the_bucket_as_promql_does(
    q: float, buckets: list[tuple[float, float]], expected: float | None
) -> None:
    found = quantile(q, buckets)
    assert found == (pytest.approx(expected) if expected is not None else None)


def test_targets_are_every_service_then_the_url_options() -> None:
    settings = Settings(port=9000, orders_port=9002, products_url="http://a:1,http://b:2")
    found = {t.name: t.url for t in targets(settings, ["worker=http://127.0.0.1:8005/"])}
    assert found["gateway"] == "http://127.0.0.1:9000"
    assert found["orders"] == "http://127.0.0.1:9002"
    assert (found["products-1"], found["products-2"]) == ("http://a:1", "http://b:2")
    assert found["worker"] == "http://127.0.0.1:8005"
    replaced = targets(settings, ["orders=http://orders.internal:8002"])
    assert {t.name: t.url for t in replaced}["orders"] == "http://orders.internal:8002"


@pytest.mark.parametrize("option", ["worker", "=http://x:1", "worker=ftp://x", "worker=x:1"])
def test_a_malformed_url_option_is_refused(option: str) -> None:
    with pytest.raises(ValueError, match="NAME=http://host:port"):
        targets(Settings(), [option])


def test_render_shows_states_in_words_and_every_section(row: Figures) -> None:
    down = Figures("users", up=False, error="HTTP 404")
    console = Console(record=True, width=200, color_system="truecolor", file=io.StringIO())
    console.print(render([row, down], interval=2.0))
    text = console.export_text(clear=False)
    assert "orders@127.0.0.1:8002 open" in text
    assert "products@127.0.0.1:8003 closed" in text
    assert "DOWN (HTTP 404)" in text
    assert "20.0%" in text  # the 5xx ratio
    assert "80.0%" in text  # cache hits
    assert "placed 10 · confirmed 7 · rejected 2 · cancelled 1" in text
    assert "success 5 · failure 3 · rate-limited 1" in text
    assert "gateway 3" in text  # rate-limit refusals
    html = console.export_html(inline_styles=True)
    assert re.search(r'<span style="[^"]*color: #800000[^"]*">open</span>', html)  # red
    assert re.search(r'<span style="[^"]*color: #008000[^"]*">closed</span>', html)  # green


def test_without_once_frames_follow_each_other_until_ctrl_c(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = iter([Scrape.parse(BEFORE, 0.0), Scrape.parse(AFTER, 2.0)] * 3)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 4:  # the first frame takes two scrapes, later ones one each
            raise KeyboardInterrupt

    monkeypatch.setattr(status.time, "sleep", sleep)
    console = Console(record=True, width=200, file=io.StringIO())
    code = status.run_status(
        [Target("gateway", "http://x")],
        interval=2.0,
        once=False,
        console=console,
        scrape=lambda found: [next(answers)],
    )
    assert code == 0
    assert sleeps == [2.0, 2.0, 2.0, 2.0]
    assert console.export_text().count("Mercato status") == 3  # printed: not a terminal
