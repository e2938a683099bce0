"""Loading one URL with wrk (1 thread, a scenario's fixed connections) and reading its report."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench._servers import LOAD_CORE, pinned

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not match:
        raise ValueError(f"cannot read a latency from {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _found(pattern: str, output: str) -> str:
    match = re.search(pattern, output)
    if match is None:
        raise RuntimeError(f"wrk output lacks {pattern!r}:\n{output}")
    return match.group(1)


def wrk(
    url: str,
    seconds: float,
    pin: bool,
    connections: int,
    *,
    headers: Mapping[str, str] | None = None,
    pids: Sequence[int] = (),
) -> dict[str, float]:
    """Load ``url`` for ``seconds`` (whole, at least 1) with ``connections`` connections
    sending ``headers``: rps, p50_ms, p99_ms, errors, requests and, with ``pids``, the CPU
    time those server processes spent per request (cpu_us)."""
    before = [cpu_seconds(pid) for pid in pids]
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run(
        pinned(LOAD_CORE, [*command, url], pin), capture_output=True, text=True, check=True
    ).stdout
    errors = 0
    if found := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        errors += int(found.group(1))
    if found := re.search(r"Socket errors:.*?timeout (\d+)", output):
        errors += int(found.group(1))
    requests = int(_found(r"(\d+) requests in", output))
    result = {
        "rps": float(_found(r"Requests/sec:\s+([\d.]+)", output)),
        "p50_ms": _ms(_found(r"\s50%\s+(\S+)", output)),
        "p99_ms": _ms(_found(r"\s99%\s+(\S+)", output)),
        "errors": float(errors),
        "requests": float(requests),
    }
    after = [cpu_seconds(pid) for pid in pids]
    if pids and requests and None not in before and None not in after:
        spent = sum(a for a in after if a is not None) - sum(b for b in before if b is not None)
        result["cpu_us"] = round(spent / requests * 1e6, 1)
    return result
