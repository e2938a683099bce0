"""``python -m bench [--quick] [SCENARIO ...]``: every scenario (or the named ones) with the
one method of bench._harness, then ``bench/results/<timestamp>.json``, ``bench/REPORT.md``
and the charts. ``QUICK=1`` in the environment is ``--quick``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import ModuleType
from typing import Any

from bench._harness import Config, Progress, fmt_duration, summarize
from bench._report import EXTRA_SCENARIOS, SCENARIOS, is_complete, write_report
from bench._servers import can_pin

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
KEY_LIBRARIES = (
    "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "pydantic", "sqlalchemy",
    "asyncpg", "redis", "aio-pika", "aiokafka", "aiohttp", "gunicorn", "pyjwt", "sqlmodel",
    "psycopg",
)  # fmt: skip


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    libraries: dict[str, str | None] = {}
    for name in KEY_LIBRARIES:
        try:
            libraries[name] = version(name)
        except PackageNotFoundError:
            libraries[name] = None
    tools = {}
    for tool, flag in (("wrk", "-v"), ("nginx", "-v")):
        tools[tool] = _tool_version(tool, flag)
    return {
        "hostname": platform.node(),
        "cpu_model": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "libraries": libraries,
        "tools": tools,
    }


def _tool_version(tool: str, flag: str) -> str | None:
    import subprocess

    if shutil.which(tool) is None:
        return None
    done = subprocess.run([tool, flag], capture_output=True, text=True, check=False)
    return (done.stdout + done.stderr).strip().splitlines()[0] if done.stdout + done.stderr else ""


def run_scenario(module: ModuleType, config: Config, progress: Progress) -> dict[str, Any]:
    name = module.__name__.removeprefix("bench.")
    started = time.monotonic()
    entry: dict[str, Any] = {
        "name": name,
        "title": module.TITLE,
        "concurrency": module.CONCURRENCY,
        "primary": module.PRIMARY,
        "notes": list(getattr(module, "NOTES", [])),
        "error": None,
    }
    samples = []
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-", dir=config.workdir))
    workdir.chmod(0o755)  # nginx's worker reads its files as another user
    try:
        samples = module.run(dataclasses.replace(config, workdir=workdir), progress)
    except Exception as exc:  # one broken scenario must not lose the others' figures
        traceback.print_exc()
        entry["error"] = f"{type(exc).__name__}: {exc}"
        progress.step(f"FAILED: {entry['error']}")
    summary = summarize(samples)
    entry["samples"] = [dataclasses.asdict(sample) for sample in samples]
    entry["summary"] = {
        variant: {metric: found.as_dict() for metric, found in metrics.items()}
        for variant, metrics in summary.items()
    }
    entry["targets"] = [target.evaluate(summary) for target in module.TARGETS]
    entry["seconds"] = round(time.monotonic() - started, 1)
    return entry


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("scenarios", nargs="*", help=f"some of: {' '.join(SCENARIOS)}")
    parser.add_argument("--quick", action="store_true", default=_truthy(os.environ.get("QUICK")))
    args = parser.parse_args(argv)
    chosen = args.scenarios or list(SCENARIOS)
    known = (*SCENARIOS, *EXTRA_SCENARIOS)
    if unknown := sorted(set(chosen) - set(known)):
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(known)}")
    if shutil.which("wrk") is None:
        print("wrk is needed: `make bench` installs it (apt-get install -y wrk)")
        return 2
    pin = can_pin()
    load_start = os.getloadavg()
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="mercato-bench-") as tmp:
        config = Config.for_run(quick=args.quick, pin=pin, workdir=Path(tmp))
        modules = [importlib.import_module(f"bench.{name}") for name in chosen]
        progress = Progress(
            {m.__name__.removeprefix("bench."): m.estimate(config) for m in modules}
        )
        kind = "QUICK" if config.quick else "full"
        print(
            f"{kind} run of {len(modules)} scenario(s), estimated "
            f"{fmt_duration(sum(progress.estimates.values()))}; load average at start "
            f"{load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}",
            flush=True,
        )
        scenarios = [run_scenario(module, config, progress) for module in modules]
    results = {
        "run": {
            "started_at": started_at,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "seconds": round(time.monotonic() - progress.started, 1),
            "quick": config.quick,
            "command": "make bench QUICK=1" if config.quick else "make bench",
            "scenarios": chosen,
        },
        "machine": {
            **machine(),
            "load_average_start": [round(x, 2) for x in load_start],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
        },
        "method": {
            "load_generator_core": 0 if pin else None,
            "server_core": 1 if pin else None,
            "pinned": pin,
            "rounds": config.rounds,
            "seconds_per_measurement": config.seconds,
            "warmup_seconds": config.warmup_seconds,
        },
        "scenarios": scenarios,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{started_at.replace(':', '')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    report = write_report(results, complete=is_complete(results))
    print(f"results: {path.relative_to(HERE.parent)}; report: {report.relative_to(HERE.parent)}")
    failed = [entry["name"] for entry in scenarios if entry["error"]]
    if failed:
        print(f"failed scenario(s): {', '.join(failed)}")
    return 1 if failed else 0


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
