"""A results JSON (bench/results/<timestamp>.json) -> bench/REPORT.md and bench/charts/*.png.

``python -m bench._report [RESULTS.json]`` re-renders the report from a stored run (the
newest one by default) without measuring anything, e.g. after bench/PROFILE.md changed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPORT = HERE / "REPORT.md"
PROFILE = HERE / "PROFILE.md"
CHARTS = HERE / "charts"
#: Every scenario, in the issue's order (issue 16): a run of all of them makes REPORT.md.
SCENARIOS = (
    "peer",
    "front_door",
    "catalogue",
    "orders",
    "events",
    "login_storm",
    "scaling",
    "memory",
)
#: Run only when named (``python -m bench http_clients``): not part of ``make bench``.
EXTRA_SCENARIOS = ("http_clients",)

#: Metrics shown in the tables, in this order, with their headings; others follow as named.
HEADINGS = {
    "rps": "req/s",
    "p50_ms": "p50 ms",
    "p99_ms": "p99 ms",
    "errors": "errors",
    "cpu_us": "server CPU µs/req",
}
HIDDEN = {"requests"}


def number(value: float | None) -> str:
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cell(found: dict[str, float]) -> str:
    if found["n"] > 1 and found["min"] != found["max"]:
        return f"{number(found['median'])} ({number(found['min'])}-{number(found['max'])})"
    return number(found["median"])


def verdict(target: dict[str, Any]) -> str:
    if target["passed"] is None:
        return "n/a" if target["value"] is None or target["threshold"] is not None else "info"
    if target.get("absolute"):
        return "**pass**" if target["passed"] else f"**MISS** by {number(abs(target['by']))}"
    share = abs(target["by"]) * 100
    if target["passed"]:
        return f"**pass** (+{share:.0f} % margin)"
    return f"**MISS** by {share:.0f} %"


def value_text(target: dict[str, Any]) -> str:
    if target["value"] is None:
        return "not measured"
    return f"{target['value']:.2f}x" if target["ratio"] else number(target["value"])


def threshold_text(target: dict[str, Any]) -> str:
    if target["threshold"] is None:
        return "-"
    unit = "x" if target["ratio"] else ""
    return f"{target['op']} {target['threshold']:g}{unit}"


def metrics_of(summary: dict[str, dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for metrics in summary.values():
        seen += [m for m in metrics if m not in seen and m not in HIDDEN]
    return [m for m in HEADINGS if m in seen] + [m for m in seen if m not in HEADINGS]


def scenario_table(summary: dict[str, dict[str, Any]]) -> list[str]:
    columns = metrics_of(summary)
    lines = [
        "| variant | " + " | ".join(HEADINGS.get(m, m) for m in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for variant, metrics in summary.items():
        cells = [cell(metrics[m]) if m in metrics else "-" for m in columns]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return lines


def banner(results: dict[str, Any]) -> list[str]:
    run, found = results["run"], results["machine"]
    load = found["load_average_start"][0]
    lines = []
    if run["quick"]:
        lines.append(
            "> **QUICK run** (`make bench QUICK=1`: 1 round, short measurements): a check that "
            "the harness works end to end, not the report's figures."
        )
    if load > 0.5 * found["cores"]:  # the 1-minute average still carries the set-up's work
        lines.append(
            f"> **Loaded machine**: load average {load:.2f} at the start on "
            f"{found['cores']} cores; other processes competed for the cores, so absolute "
            "figures and ratios are noisy."
        )
    return [*"\n>\n".join(lines).splitlines(), ""] if lines else []


def render(results: dict[str, Any], profile: str, charts: dict[str, str]) -> str:
    run, found, method = results["run"], results["machine"], results["method"]
    out = ["# Benchmark report (issue 16)", ""]
    out += banner(results)
    load = " / ".join(f"{x:.2f}" for x in found["load_average_start"])
    load_end = " / ".join(f"{x:.2f}" for x in found["load_average_end"])
    out += [
        f"Run **{run['started_at']}** (`{run['command']}`), {run['seconds'] / 60:.1f} min, "
        f"on **{found['hostname']}**: {found['cpu_model']}, {found['cores']} cores, "
        f"Linux {found['kernel']}, Python {found['python']}; load average (1/5/15 min) "
        f"{load} at the start, {load_end} at the end. Every sample: "
        f"`bench/results/{run['started_at'].replace(':', '')}.json`.",
        "",
        "## Method",
        "",
        (
            f"wrk (1 thread) pinned to core {method['load_generator_core']}, servers "
            f"(every process of `mercato up` included) pinned to core {method['server_core']} "
            "with `taskset`, unless a scenario says otherwise"
            if method["pinned"]
            else "Nothing pinned (taskset or a second core missing): figures are noisier"
        )
        + f"; a warm-up of {method['warmup_seconds']:g} s per variant, a fixed concurrency per "
        f"scenario, {method['rounds']} interleaved round(s) of "
        f"{method['seconds_per_measurement']:g} s (round 1 of every variant, then round 2, "
        "...). Figures are medians with their min-max over the rounds.",
        "",
        "## Targets",
        "",
        "| scenario | target | measured | goal | verdict |",
        "|---|---|---:|---:|---|",
    ]
    for entry in results["scenarios"]:
        for target in entry["targets"]:
            out.append(
                f"| {entry['name']} | {target['text']} | {value_text(target)} | "
                f"{threshold_text(target)} | {verdict(target)} |"
            )
    for number_, entry in enumerate(results["scenarios"], 1):
        out += ["", f"## {number_}. {entry['title']}", ""]
        out.append(
            f"Scenario `{entry['name']}`, concurrency {entry['concurrency']}, "
            f"{entry['seconds']:.0f} s."
        )
        if entry["error"]:
            out += ["", f"**Failed**: `{entry['error']}` (figures below are what was measured)."]
        for note in entry["notes"]:
            out += ["", note]
        if entry["summary"]:
            out += ["", *scenario_table(entry["summary"])]
        if entry["name"] in charts:
            out += ["", f"![{entry['name']}]({charts[entry['name']]})"]
    machine_rows = [f"| {k} | {v or 'missing'} |" for k, v in found["libraries"].items()]
    tool_rows = [f"| {k} | {v or 'missing'} |" for k, v in found["tools"].items()]
    out += [
        "",
        "## Profile findings",
        "",
        profile.strip() or "(bench/PROFILE.md is empty)",
        "",
        "## Machine and versions",
        "",
        "| what | version |",
        "|---|---|",
        *tool_rows,
        *machine_rows,
        "",
        "## Commands",
        "",
        "```sh",
        "make bench                      # every scenario, the full method (about 12 min)",
        "make bench QUICK=1              # 1 round, short measurements (a few minutes)",
        ".venv/bin/python -m bench front_door orders   # some only: bench/results/<time>.md",
        ".venv/bin/python -m bench._report             # re-render this file from the newest JSON",
        "```",
        "",
    ]
    return "\n".join(out)


def draw_charts(results: dict[str, Any], directory: Path) -> dict[str, str]:
    """One PNG per scenario: its primary metric's median per variant, min-max as error bars.
    Returns ``{scenario: path relative to bench/}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(exist_ok=True)
    drawn: dict[str, str] = {}
    for entry in results["scenarios"]:
        metric = entry["primary"]
        rows = [(v, m[metric]) for v, m in entry["summary"].items() if metric in m]
        if not rows:
            continue
        names = [name for name, _ in rows]
        medians = [found["median"] for _, found in rows]
        low = [found["median"] - found["min"] for _, found in rows]
        high = [found["max"] - found["median"] for _, found in rows]
        figure, axis = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.4))
        axis.barh(names, medians, xerr=[low, high], color="#4a7ab5", capsize=3)
        axis.invert_yaxis()
        for index, value in enumerate(medians):
            axis.annotate(f" {number(value)}", (value, index), va="center", fontsize=8)
        axis.set_xlabel(f"{HEADINGS.get(metric, metric)} (median, min-max)")
        kind = "QUICK run" if results["run"]["quick"] else "run"
        axis.set_title(f"{entry['name']}: {kind} {results['run']['started_at']}", fontsize=10)
        figure.tight_layout()
        path = directory / f"{entry['name']}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        drawn[entry["name"]] = str(path.relative_to(HERE))
    return drawn


def write_report(results: dict[str, Any], *, complete: bool = True) -> Path:
    """bench/REPORT.md and bench/charts/ from a run of every scenario; a run of some only
    goes to bench/results/<timestamp>.md (no charts), leaving the report of the last
    complete run as it is."""
    profile = PROFILE.read_text(encoding="utf-8") if PROFILE.exists() else ""
    if not complete:
        path = HERE / "results" / f"{results['run']['started_at'].replace(':', '')}.md"
        path.write_text(render(results, profile, {}), encoding="utf-8")
        return path
    try:
        charts = draw_charts(results, CHARTS)
    except ImportError:
        print("matplotlib is missing (the bench dependency group): no charts")
        charts = {}
    REPORT.write_text(render(results, profile, charts), encoding="utf-8")
    return REPORT


def is_complete(results: dict[str, Any]) -> bool:
    return set(results["run"]["scenarios"]) >= set(SCENARIOS)


def main(argv: list[str]) -> int:
    """Render RESULTS.json, or the newest complete run's (timestamped names sort by time;
    bench/results/orders_fault.json, the fault test's, is not a run)."""
    if argv:
        path = Path(argv[0])
    else:
        runs = sorted((HERE / "results").glob("[0-9]*T*Z.json"), reverse=True)
        path = next((p for p in runs if is_complete(json.loads(p.read_text()))), None)
        if path is None:
            print("no complete run yet: run `make bench`")
            return 1
    results = json.loads(path.read_text())
    print(f"report from {path}: {write_report(results, complete=is_complete(results))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
