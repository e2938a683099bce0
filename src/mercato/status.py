"""``mercato status``: the figures an operator watches, read from every service's ``/metrics``.

For someone on one machine without Prometheus or Grafana: two scrapes ``interval`` seconds
apart give the rates (requests, events) and the figures of that window (5xx ratio, p50 and
p99 latency, cache hit ratio); the gauges (breakers, outbox, consumer lag) and the running
totals (orders funnel, logins, rate-limit refusals) are read from the second scrape. The
probes (``/healthz``, ``/readyz``, ``/metrics``, including this command's own scrapes) are
left out of the request figures.

The computations (:func:`figures`, :func:`quantile`) are plain functions of the scraped text,
tested on canned metrics; :func:`render` lays them out with rich; :func:`run_status` loops.
"""

from __future__ import annotations

import contextlib
import http.client
import math
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from mercato.settings import SERVICES, Settings

#: Routes that are probes, not traffic: left out of the request figures.
PROBE_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
BREAKER_STATES = {0: ("closed", "green"), 1: ("half-open", "yellow"), 2: ("open", "bold red")}
FUNNEL = ("placed", "confirmed", "rejected", "cancelled")
LOGIN_OUTCOMES = ("success", "failure", "rate_limited")
EVENT_COUNTERS = {
    "published": "messaging_events_published_total",
    "consumed": "messaging_events_consumed_total",
    "retried": "messaging_events_retried_total",
    "dead-lettered": "messaging_events_dead_lettered_total",
}
CACHE_HITS = frozenset({"local", "shared"})
NONE = "-"  # a figure not exported, or not measurable in the window
FETCH_TIMEOUT = 2.0

#: Which samples of a metric count, by their labels.
Keep = Callable[[Mapping[str, str]], bool]


@dataclass(frozen=True)
class Target:
    """One process to scrape: a name to show and its base URL."""

    name: str
    url: str


def targets(settings: Settings, overrides: Sequence[str] = ()) -> list[Target]:
    """Every instance of every service as the settings name them (``mercato up``'s ports or
    the ``*_URL`` settings), then ``overrides`` (``NAME=URL``): a name already listed
    gets that URL instead, a new one (``worker=http://127.0.0.1:8005``) is added."""
    found: dict[str, str] = {}
    for service in SERVICES:
        urls = settings.service_urls(service)
        for number, url in enumerate(urls, start=1):
            found[service if len(urls) == 1 else f"{service}-{number}"] = url
    for item in overrides:
        name, sep, url = item.partition("=")
        if not sep or not name.strip() or not url.startswith(("http://", "https://")):
            raise ValueError(f"--url takes NAME=http://host:port, not {item!r}")
        found[name.strip()] = url
    return [Target(name, url.rstrip("/")) for name, url in found.items()]


# --- one scrape --------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Scrape:
    """What one ``/metrics`` answered (``samples``) at ``at`` (monotonic seconds), or why it
    did not (``error``)."""

    at: float
    samples: tuple[Sample, ...] = ()
    error: str | None = None

    @classmethod
    def parse(cls, text: str, at: float) -> Scrape:
        samples = tuple(
            Sample(sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        )
        return cls(at, samples)

    @property
    def up(self) -> bool:
        return self.error is None

    def select(self, name: str, keep: Keep | None = None) -> list[Sample]:
        return [s for s in self.samples if s.name == name and (keep is None or keep(s.labels))]

    def total(self, name: str, keep: Keep | None = None) -> float:
        return math.fsum(sample.value for sample in self.select(name, keep))

    def has(self, name: str) -> bool:
        return any(sample.name == name for sample in self.samples)


#: No proxy from the environment: the services are scraped where they listen.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(target: Target, now: Callable[[], float] = time.monotonic) -> Scrape:
    """Scrape ``target``'s ``/metrics``; a failure is a :class:`Scrape` with an error."""
    try:
        with _OPENER.open(f"{target.url}/metrics", timeout=FETCH_TIMEOUT) as response:
            text = response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return Scrape(now(), error=f"HTTP {exc.code}")
    except (OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)  # a URLError wraps the socket's error
        return Scrape(
            now(), error=type(reason).__name__ if isinstance(reason, Exception) else str(reason)
        )
    try:
        return Scrape.parse(text, now())
    except ValueError:
        return Scrape(now(), error="not Prometheus text")


def fetch_all(found: Sequence[Target]) -> list[Scrape]:
    with ThreadPoolExecutor(max_workers=max(len(found), 1)) as pool:
        return list(pool.map(fetch, found))


# --- figures ----------------------------------------------------------------------------


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a histogram from its cumulative ``(le, count)`` buckets, by
    linear interpolation inside the bucket (as PromQL's ``histogram_quantile``); None
    when it holds no observation. A rank in the ``+Inf`` bucket answers the largest bound."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def _labelled(name: str, value: str) -> Keep:
    return lambda labels: labels.get(name) == value


def _traffic(labels: Mapping[str, str]) -> bool:
    return labels.get("route") not in PROBE_ROUTES


def _cache_hit(labels: Mapping[str, str]) -> bool:
    return labels.get("outcome") in CACHE_HITS


def _server_error(labels: Mapping[str, str]) -> bool:
    return _traffic(labels) and labels.get("status", "").startswith("5")


@dataclass(frozen=True)
class Breaker:
    upstream: str
    address: str
    state: int


@dataclass(frozen=True)
class Figures:
    """What ``mercato status`` shows of one process; None: not exported (or no traffic in
    the window, for ratios and quantiles)."""

    name: str
    up: bool
    error: str | None = None
    requests: float = 0.0
    request_rate: float | None = None
    error_ratio: float | None = None
    p50: float | None = None
    p99: float | None = None
    breakers: tuple[Breaker, ...] = ()
    cache_hit_ratio: float | None = None
    outbox_backlog: float | None = None
    outbox_oldest_age: float | None = None
    event_rates: dict[str, float] = field(default_factory=dict)
    event_totals: dict[str, float] = field(default_factory=dict)
    consumer_lag: float | None = None
    orders: dict[str, float] = field(default_factory=dict)
    logins: dict[str, float] = field(default_factory=dict)
    refusals: float = 0.0


def _gauge(scrape: Scrape, name: str) -> float | None:
    return scrape.total(name) if scrape.has(name) else None


def _gauge_max(scrape: Scrape, name: str) -> float | None:
    values = [sample.value for sample in scrape.select(name)]
    return max(values) if values else None


def _latency_buckets(before: Scrape, after: Scrape) -> list[tuple[float, float]]:
    """The request-latency buckets of the window (``after`` minus ``before``), summed over
    every route but the probes."""
    by_bound: dict[float, float] = {}
    for scrape, sign in ((after, 1.0), (before, -1.0)):
        for sample in scrape.select("http_request_duration_seconds_bucket", _traffic):
            bound = float(sample.labels["le"])
            by_bound[bound] = by_bound.get(bound, 0.0) + sign * sample.value
    return sorted(by_bound.items())


def figures(name: str, before: Scrape, after: Scrape) -> Figures:
    """The figures of one process from two scrapes ``after.at - before.at`` seconds apart."""
    if not after.up:
        return Figures(name, up=False, error=after.error)
    window = after.at - before.at
    usable = before.up and window > 0

    def delta(metric: str, keep: Keep | None = None) -> float:
        if not usable:
            return 0.0
        return max(after.total(metric, keep) - before.total(metric, keep), 0.0)

    requests = after.total("http_requests_total", _traffic)
    in_window = delta("http_requests_total", _traffic)
    buckets = _latency_buckets(before, after) if usable else []
    reads = delta("products_cache_reads_total")
    hits = delta("products_cache_reads_total", _cache_hit)
    return Figures(
        name,
        up=True,
        requests=requests,
        request_rate=in_window / window if usable else None,
        error_ratio=delta("http_requests_total", _server_error) / in_window if in_window else None,
        p50=quantile(0.5, buckets),
        p99=quantile(0.99, buckets),
        breakers=tuple(
            Breaker(s.labels.get("upstream", "?"), s.labels.get("address", ""), int(s.value))
            for s in after.select("upstream_circuit_state")
        ),
        cache_hit_ratio=hits / reads if reads else None,
        outbox_backlog=_gauge(after, "messaging_outbox_backlog"),
        outbox_oldest_age=_gauge_max(after, "messaging_outbox_oldest_age_seconds"),
        event_rates={
            label: delta(metric) / window for label, metric in EVENT_COUNTERS.items() if usable
        },
        event_totals={
            label: after.total(metric)
            for label, metric in EVENT_COUNTERS.items()
            if after.has(metric)
        },
        consumer_lag=_gauge(after, "messaging_consumer_lag"),
        orders={
            status: after.total("orders_total", _labelled("status", status))
            for status in FUNNEL
            if after.has("orders_total")
        },
        logins={
            outcome: after.total("auth_login_attempts_total", _labelled("outcome", outcome))
            for outcome in LOGIN_OUTCOMES
            if after.has("auth_login_attempts_total")
        },
        refusals=after.total("rate_limit_refusals_total"),
    )


# --- layout -----------------------------------------------------------------------------


def _number(value: float | None, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return NONE
    return f"{value:,.{digits}f}{unit}" if value % 1 or digits == 0 else f"{value:,.0f}{unit}"


def _seconds(value: float | None) -> str:
    if value is None:
        return NONE
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def _percent(value: float | None, warn: float = 0.01, bad: float = 0.05) -> Text:
    if value is None:
        return Text(NONE)
    style = "bold red" if value >= bad else "yellow" if value >= warn else "green"
    return Text(f"{value:.1%}", style=style)


def _hit_ratio(value: float | None) -> Text:
    if value is None:
        return Text(NONE)
    return Text(f"{value:.1%}", style="green" if value >= 0.5 else "yellow")


def _status(row: Figures) -> Text:
    return Text("up", style="green") if row.up else Text(f"DOWN ({row.error})", style="bold red")


def _traffic_table(rows: Sequence[Figures]) -> Table:
    table = Table(title="Requests (probes left out)", title_justify="left", expand=False)
    for column in ("service", "status", "req/s", "5xx", "p50", "p99", "requests"):
        table.add_column(column, justify="left" if column in {"service", "status"} else "right")
    for row in rows:
        table.add_row(
            row.name,
            _status(row),
            _number(row.request_rate, digits=2),
            _percent(row.error_ratio),
            _seconds(row.p50),
            _seconds(row.p99),
            _number(row.requests, digits=0) if row.up else NONE,
        )
    return table


def _dependencies_table(rows: Sequence[Figures]) -> Table:
    table = Table(title="Upstreams and cache", title_justify="left")
    table.add_column("service")
    table.add_column("circuit breakers")
    table.add_column("cache hits", justify="right")
    for row in rows:
        if not row.breakers and row.cache_hit_ratio is None:
            continue
        breakers = Text()
        for breaker in row.breakers:
            state, style = BREAKER_STATES.get(breaker.state, ("unknown", "red"))
            if breakers:
                breakers.append("\n")
            breakers.append(f"{breaker.upstream}@{breaker.address} ")
            breakers.append(state, style=style)
        table.add_row(row.name, breakers or Text(NONE), _hit_ratio(row.cache_hit_ratio))
    return table


def _events_table(rows: Sequence[Figures]) -> Table:
    table = Table(title="Events (total, and per second)", title_justify="left")
    table.add_column("service")
    table.add_column("outbox backlog", justify="right")
    table.add_column("oldest", justify="right")
    for label in EVENT_COUNTERS:
        table.add_column(label, justify="right")
    table.add_column("consumer lag", justify="right")
    for row in rows:
        if row.outbox_backlog is None and not row.event_totals:
            continue
        age = row.outbox_oldest_age
        age_style = "bold red" if (age or 0) > 60 else "yellow" if (age or 0) > 5 else ""
        cells: list[Text | str] = [
            row.name,
            _number(row.outbox_backlog, digits=0),
            Text(_number(age, " s"), style=age_style),
        ]
        for label in EVENT_COUNTERS:
            total = row.event_totals.get(label, 0.0)
            rate = row.event_rates.get(label)
            style = "bold red" if label == "dead-lettered" and total else ""
            cells.append(Text(f"{total:,.0f} ({_number(rate, '/s', 2)})", style=style))
        cells.append(_number(row.consumer_lag, digits=0))
        table.add_row(*cells)
    return table


def _business(rows: Sequence[Figures]) -> Text:
    text = Text()
    for row in rows:
        if row.orders:
            funnel = " · ".join(f"{status} {row.orders[status]:,.0f}" for status in FUNNEL)
            text.append(f"Orders ({row.name}): {funnel}\n")
        if row.logins:
            failures = row.logins.get("failure", 0.0)
            text.append(f"Logins ({row.name}): success {row.logins.get('success', 0.0):,.0f} · ")
            text.append(f"failure {failures:,.0f}", style="yellow" if failures else "")
            text.append(f" · rate-limited {row.logins.get('rate_limited', 0.0):,.0f}\n")
    refusals = " · ".join(f"{row.name} {row.refusals:,.0f}" for row in rows if row.up)
    text.append(f"Rate-limit refusals (429): {refusals or NONE}")
    return text


def render(rows: Sequence[Figures], *, interval: float) -> Group:
    """Every table of one frame, for rich."""
    heading = f"Mercato status · window {interval:g} s · {time.strftime('%H:%M:%S')}"
    return Group(
        Text(heading, style="bold"),
        _traffic_table(rows),
        _dependencies_table(rows),
        _events_table(rows),
        _business(rows),
    )


# --- the command -------------------------------------------------------------------------


def snapshot(
    found: Sequence[Target],
    interval: float,
    scrape: Callable[[Sequence[Target]], list[Scrape]] = fetch_all,
    previous: list[Scrape] | None = None,
) -> tuple[list[Figures], list[Scrape]]:
    """Figures from ``previous`` (else a scrape now) and a scrape ``interval`` seconds
    later; answers them and that last scrape (the next frame's ``previous``)."""
    before = previous if previous is not None else scrape(found)
    if previous is None:
        time.sleep(interval)
    after = scrape(found)
    rows = [figures(t.name, b, a) for t, b, a in zip(found, before, after, strict=True)]
    return rows, after


def run_status(
    found: Sequence[Target],
    *,
    interval: float,
    once: bool,
    console: Console | None = None,
    scrape: Callable[[Sequence[Target]], list[Scrape]] = fetch_all,
) -> int:
    """Show the figures of ``found`` every ``interval`` seconds until Ctrl-C (in place on a
    terminal, one frame after another otherwise; ``once``: one frame); answers 1 when a
    process did not answer its last scrape, else 0."""
    if console is None:
        console = Console()
        if not console.is_terminal:  # piped or captured: wide enough for every column
            console = Console(width=max(console.width, 132))
    rows, last = snapshot(found, interval, scrape)
    if once:
        console.print(render(rows, interval=interval))
        return 0 if all(row.up for row in rows) else 1
    live = Live(console=console, auto_refresh=False, screen=True) if console.is_terminal else None
    try:
        with live or contextlib.nullcontext():
            while True:
                frame = render(rows, interval=interval)
                if live is None:
                    console.print(frame)
                else:
                    live.update(frame, refresh=True)
                time.sleep(interval)
                rows, last = snapshot(found, interval, scrape, previous=last)
    except KeyboardInterrupt:
        pass
    return 0 if all(row.up for row in rows) else 1


def run_command(settings: Settings, urls: Sequence[str], interval: float, once: bool) -> int:
    """``mercato status``: 2 (and one line) for a malformed ``--url``, else as
    :func:`run_status` (``urls``: its ``--url`` options)."""
    try:
        found = targets(settings, urls)
    except ValueError as exc:
        print(f"mercato: {exc}", file=sys.stderr)
        return 2
    return run_status(found, interval=interval, once=once)
