"""The pure parts of the benchmark harness (bench/_harness.py, bench/_report.py): the order
of interleaved rounds, medians with min-max, targets' pass/miss, progress lines, and
REPORT.md rendered from a canned results JSON."""

from __future__ import annotations

import io
from typing import Any

import pytest
from bench._harness import Progress, Sample, Target, interleave, summarize
from bench._report import SCENARIOS, is_complete, render


def test_rounds_interleave_every_variant_before_the_next_round() -> None:
    assert interleave(["a", "b", "c"], 2) == [
        (1, "a"), (1, "b"), (1, "c"), (2, "a"), (2, "b"), (2, "c"),
    ]  # fmt: skip


def test_summary_keeps_the_median_and_the_range_of_each_metric() -> None:
    samples = [
        Sample("gateway", 1, {"rps": 900, "p99_ms": 30}),
        Sample("nginx", 1, {"rps": 2000}),
        Sample("gateway", 2, {"rps": 1100, "p99_ms": 10}),
        Sample("gateway", 3, {"rps": 1000, "p99_ms": 20}),
    ]
    summary = summarize(samples)
    assert list(summary) == ["gateway", "nginx"]
    rps = summary["gateway"]["rps"]
    assert (rps.median, rps.min, rps.max, rps.n) == (1000, 900, 1100, 3)
    assert summary["gateway"]["p99_ms"].median == 20
    assert summary["nginx"]["rps"].n == 1


def test_an_even_number_of_rounds_takes_the_middle_two_values_mean() -> None:
    summary = summarize([Sample("a", 1, {"rps": 1}), Sample("a", 2, {"rps": 3})])
    assert summary["a"]["rps"].median == 2


SUMMARY = summarize(
    [
        Sample("gateway", 1, {"rps": 600, "p50_ms": 30, "lost": 0}),
        Sample("nginx", 1, {"rps": 1000, "p50_ms": 10}),
    ]
)


@pytest.mark.parametrize(
    ("target", "passed", "by"),
    [
        (Target("t", "", "gateway", "rps", ">=", 0.5, over="nginx"), True, 0.2),
        (Target("t", "", "gateway", "rps", ">=", 0.8, over="nginx"), False, -0.25),
        (Target("t", "", "gateway", "p50_ms", "<=", 1.5, over="nginx"), False, -1.0),
        (Target("t", "", "nginx", "p50_ms", "<=", 20), True, 0.5),
        (Target("t", "", "gateway", "rps", ">=", 200), True, 2.0),
    ],
)
def test_a_target_passes_or_misses_by_its_share_of_the_threshold(
    target: Target, passed: bool, by: float
) -> None:
    found = target.evaluate(SUMMARY)
    assert found["passed"] is passed
    assert found["by"] == pytest.approx(by)


def test_a_zero_threshold_is_missed_by_the_metrics_own_units() -> None:
    lost = summarize([Sample("rabbitmq", 1, {"lost": 3})])
    found = Target("t", "", "rabbitmq", "lost", "<=", 0).evaluate(lost)
    assert (found["passed"], found["by"], found["absolute"]) == (False, -3, True)


def test_a_target_whose_variant_was_not_measured_has_no_verdict() -> None:
    found = Target("t", "", "kafka", "rps", ">=", 1).evaluate(SUMMARY)
    assert (found["value"], found["passed"]) == (None, None)


def test_an_info_target_reports_the_ratio_without_a_verdict() -> None:
    found = Target("t", "", "gateway", "rps", over="nginx").evaluate(SUMMARY)
    assert found["value"] == pytest.approx(0.6)
    assert found["passed"] is None


def test_progress_tells_the_step_the_elapsed_time_and_the_time_left() -> None:
    now = [100.0]
    out = io.StringIO()
    progress = Progress({"a": 60, "b": 120}, out=out, clock=lambda: now[0])
    progress.begin("a", steps=2)
    now[0] = 130.0
    progress.step("round 1/1 x", advance=True)
    lines = out.getvalue().splitlines()
    assert lines[0] == "[0m00s | ~3m00s left] a: start"
    assert lines[1] == "[0m30s | ~2m30s left] a: round 1/1 x"


def canned_results(*, quick: bool, load: float) -> dict[str, Any]:
    summary = {
        "gateway": {"rps": {"median": 600.0, "min": 550.0, "max": 700.0, "n": 3}},
        "nginx": {"rps": {"median": 1000.0, "min": 990.0, "max": 1010.0, "n": 3}},
    }
    target = Target("rps", "gateway >= 0.8x nginx", "gateway", "rps", ">=", 0.8, over="nginx")
    return {
        "run": {
            "started_at": "2026-12-01T10:00:00Z",
            "finished_at": "2026-12-01T10:12:00Z",
            "seconds": 720.0,
            "quick": quick,
            "command": "make bench QUICK=1" if quick else "make bench",
            "scenarios": ["front_door"],
        },
        "machine": {
            "hostname": "box",
            "cpu_model": "Some CPU",
            "cores": 2,
            "kernel": "6.1",
            "python": "3.11.7",
            "libraries": {"fastapi": "0.1"},
            "tools": {"wrk": "wrk 4.1.0", "nginx": None},
            "load_average_start": [load, 0.2, 0.1],
            "load_average_end": [0.3, 0.2, 0.1],
        },
        "method": {
            "load_generator_core": 0,
            "server_core": 1,
            "pinned": True,
            "rounds": 3,
            "seconds_per_measurement": 5.0,
            "warmup_seconds": 2.0,
        },
        "scenarios": [
            {
                "name": "front_door",
                "title": "Front door",
                "concurrency": 50,
                "primary": "rps",
                "notes": ["A note."],
                "error": None,
                "samples": [],
                "summary": summary,
                "targets": [target.evaluate(summarize_canned(summary))],
                "seconds": 60.0,
            }
        ],
    }


def summarize_canned(summary: dict[str, Any]) -> Any:
    return summarize(
        Sample(variant, 1, {m: v["median"] for m, v in metrics.items()})
        for variant, metrics in summary.items()
    )


def test_the_report_shows_the_run_the_targets_the_tables_and_the_profile() -> None:
    text = render(
        canned_results(quick=False, load=0.1),
        "Rate limiting was 20 % of the gateway.",
        {"front_door": "charts/front_door.png"},
    )
    assert "Run **2026-12-01T10:00:00Z** (`make bench`)" in text
    assert "Some CPU, 2 cores" in text
    assert "0.10 / 0.20 / 0.10 at the start" in text
    assert "| front_door | gateway >= 0.8x nginx | 0.60x | >= 0.8x | **MISS** by 25 % |" in text
    assert "| gateway | 600 (550-700) |" in text
    assert "![front_door](charts/front_door.png)" in text
    assert "## Profile findings\n\nRate limiting was 20 % of the gateway." in text
    assert "| nginx | missing |" in text
    assert "QUICK" not in text.split("## Method")[0]
    assert "Loaded machine" not in text


def test_a_quick_run_on_a_loaded_machine_says_so_at_the_top() -> None:
    text = render(canned_results(quick=True, load=6.5), "", {})
    head = text.split("## Method")[0]
    assert "**QUICK run**" in head
    assert "**Loaded machine**: load average 6.50" in head
    assert "(bench/PROFILE.md is empty)" in text


def test_only_a_run_of_every_scenario_makes_the_report() -> None:
    partial = canned_results(quick=False, load=0.1)
    assert not is_complete(partial)
    partial["run"]["scenarios"] = list(SCENARIOS)
    assert is_complete(partial)
