"""Run every benchmark module of this package in turn (``python -m bench [NAME ...]``)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import time
from pathlib import Path


def scenarios() -> list[str]:
    here = Path(__file__).parent
    return sorted(
        info.name
        for info in pkgutil.iter_modules([str(here)])
        if not info.name.startswith("_") and info.name not in {"results"}
    )


def main(argv: list[str]) -> int:
    chosen = argv or scenarios()
    unknown = sorted(set(chosen) - set(scenarios()))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(scenarios())}")
        return 2
    failed: list[str] = []
    for name in chosen:
        print(f"\n=== bench.{name}", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, "-m", f"bench.{name}"])
        print(f"=== bench.{name}: exit {code} in {time.monotonic() - started:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
