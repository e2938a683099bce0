"""The one method every scenario is measured with, and its pure parts (tested in
tests/unit/test_bench_harness.py).

- :class:`Config`: rounds, seconds per measurement, warm-up, pinning (QUICK or full);
- :func:`interleave`: round 1 of every variant, then round 2, ... so that drifts of the
  machine's load hit every variant alike;
- :func:`summarize`: each metric's median with its min and max over the rounds;
- :class:`Target`: a scenario's goal as data, evaluated against the medians (pass/miss and
  by how much);
- :class:`Progress`: one line per step: what runs, elapsed, estimated time left;
- :func:`measure_http`: a warm-up, then interleaved wrk rounds over a scenario's URLs.

A scenario is a module ``bench/<name>.py`` with ``TITLE``, ``CONCURRENCY``, ``PRIMARY`` (the
metric its chart shows), ``TARGETS``, ``estimate(config) -> seconds`` and
``run(config, progress) -> list[Sample]``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

LOAD_CORE, SERVER_CORE = 0, 1


@dataclass(frozen=True)
class Config:
    quick: bool = False
    rounds: int = 3
    seconds: float = 5.0  # one wrk measurement
    warmup_seconds: float = 2.0
    pin: bool = True
    workdir: Path = Path()  # each scenario gets a fresh directory under the run's own

    @classmethod
    def for_run(cls, *, quick: bool, pin: bool, workdir: Path) -> Config:
        if quick:
            return cls(True, rounds=1, seconds=1.0, warmup_seconds=1.0, pin=pin, workdir=workdir)
        return cls(False, pin=pin, workdir=workdir)

    def scaled(self, full: int, quick: int) -> int:
        """A count (orders, events) for this kind of run."""
        return quick if self.quick else full


@dataclass(frozen=True)
class Sample:
    """One measurement: ``variant`` of a scenario in ``round`` (1-based)."""

    variant: str
    round: int
    metrics: Mapping[str, float]


def interleave(variants: Sequence[str], rounds: int) -> list[tuple[int, str]]:
    """The order of the measurements: (round, variant), every variant once per round."""
    return [(number, variant) for number in range(1, rounds + 1) for variant in variants]


@dataclass(frozen=True)
class Stat:
    median: float
    min: float
    max: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.min, "max": self.max, "n": self.n}


def stat(values: Iterable[float]) -> Stat:
    found = sorted(values)
    if not found:
        raise ValueError("no values")
    return Stat(statistics.median(found), found[0], found[-1], len(found))


Summary = dict[str, dict[str, Stat]]


def summarize(samples: Iterable[Sample]) -> Summary:
    """Per variant, per metric: median, min and max over the rounds (variants and metrics
    in the order they were first measured)."""
    values: dict[str, dict[str, list[float]]] = {}
    for sample in samples:
        for metric, value in sample.metrics.items():
            values.setdefault(sample.variant, {}).setdefault(metric, []).append(float(value))
    return {
        variant: {metric: stat(found) for metric, found in metrics.items()}
        for variant, metrics in values.items()
    }


@dataclass(frozen=True)
class Target:
    """``variant``'s median ``metric`` (divided by ``over``'s when given) ``op`` ``threshold``.

    ``info`` targets have no threshold: the report shows the ratio (a speed-up) only.
    """

    id: str
    text: str
    variant: str
    metric: str
    op: Literal[">=", "<="] = ">="
    threshold: float | None = None
    over: str | None = None

    def evaluate(self, summary: Summary) -> dict[str, Any]:
        result: dict[str, Any] = {
            "id": self.id,
            "text": self.text,
            "op": self.op,
            "threshold": self.threshold,
            "ratio": self.over is not None,
        }
        try:
            value = summary[self.variant][self.metric].median
            if self.over is not None:
                value /= summary[self.over][self.metric].median
        except (KeyError, ZeroDivisionError):
            return {**result, "value": None, "passed": None, "by": None}
        if self.threshold is None:
            return {**result, "value": value, "passed": None, "by": None}
        passed = value >= self.threshold if self.op == ">=" else value <= self.threshold
        if self.threshold == 0:  # "nothing lost": how far, in the metric's own units
            by = value if self.op == ">=" else -value
            return {**result, "value": value, "passed": passed, "by": by, "absolute": True}
        # How far from the threshold, as a share of it: +0.25 is 25 % better, -0.4 40 % short.
        by = (value / self.threshold - 1) if self.op == ">=" else (1 - value / self.threshold)
        return {**result, "value": value, "passed": passed, "by": by, "absolute": False}


def fmt_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


@dataclass
class Progress:
    """Prints ``[elapsed | ~left] scenario: step`` lines; the time left is the rest of the
    current scenario's estimate (by the share of its steps done) plus the later ones'."""

    estimates: dict[str, float]
    out: TextIO = sys.stdout
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=0.0)
    scenario: str = ""
    steps: int = 1
    done: int = 0

    def __post_init__(self) -> None:
        self.started = self.clock()

    def begin(self, scenario: str, steps: int) -> None:
        self.scenario, self.steps, self.done = scenario, max(1, steps), 0
        self.step("start")

    def left(self) -> float:
        names = list(self.estimates)
        later = names[names.index(self.scenario) + 1 :] if self.scenario in names else names
        current = self.estimates.get(self.scenario, 0.0) * (1 - min(1, self.done / self.steps))
        return current + sum(self.estimates[name] for name in later)

    def step(self, what: str, *, advance: bool = False) -> None:
        if advance:
            self.done += 1
        elapsed = self.clock() - self.started
        print(
            f"[{fmt_duration(elapsed)} | ~{fmt_duration(self.left())} left] "
            f"{self.scenario}: {what}",
            file=self.out,
            flush=True,
        )


# --- pinning --------------------------------------------------------------------------------


@contextmanager
def this_process_on(core: int, pin: bool) -> Iterator[None]:
    """Run this (Python) load generator or in-process server on ``core`` for a while."""
    if not pin:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# --- HTTP scenarios -------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    pids: tuple[int, ...] = ()  # the server processes whose CPU time is counted


def measure_http(
    config: Config,
    progress: Progress,
    endpoints: Mapping[str, Endpoint],
    *,
    connections: int,
    pin_load: bool | None = None,
    during: Mapping[str, Callable[[], Any]] | None = None,
) -> list[Sample]:
    """Warm each endpoint up, then load each in interleaved rounds with wrk.

    ``during[variant]`` is a context manager factory active while that variant is measured
    (another load, such as a login storm)."""
    from bench._wrk import wrk

    pin = config.pin if pin_load is None else pin_load
    for variant, endpoint in endpoints.items():
        progress.step(f"warm-up {variant}")
        wrk(endpoint.url, config.warmup_seconds, pin, connections, headers=endpoint.headers)
    samples: list[Sample] = []
    for number, variant in interleave(list(endpoints), config.rounds):
        endpoint = endpoints[variant]
        progress.step(f"round {number}/{config.rounds} {variant}")
        context = (during or {}).get(variant, nullcontext)
        with context() as extra:
            run = wrk(
                endpoint.url,
                config.seconds,
                pin,
                connections,
                headers=endpoint.headers,
                pids=endpoint.pids,
            )
        if callable(extra):  # what the other load measured meanwhile
            run = {**run, **extra()}
        samples.append(Sample(variant, number, run))
        progress.step(
            f"round {number}/{config.rounds} {variant}: {run['rps']:.0f} rps, "
            f"p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms",
            advance=True,
        )
    return samples


def http_seconds(config: Config, variants: int) -> float:
    return variants * (config.warmup_seconds + config.rounds * config.seconds + 0.3)
