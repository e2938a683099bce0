"""``python -m bench._profile [SECONDS]``: the gateway under pyinstrument while wrk loads a
``GET /api/v1/products/{id}`` through it, in front of the constant-JSON app (so that only the
gateway's own work shows). Writes ``bench/results/gateway-profile.txt`` (frames under 1 % of
the time left out): material for the hand-kept bench/PROFILE.md.
"""

from __future__ import annotations

import re
import signal
import sys
import tempfile
from pathlib import Path

from bench._servers import Servers, bearer, bench_keys, can_pin, free_port, wait_until_answers
from bench._wrk import wrk
from bench.front_door import gateway_env

RESULTS = Path(__file__).resolve().parent / "results"
_TIMED_LINE = re.compile(r"^[^0-9]*?(\d+\.\d+) ")


def compact_profile(text: str, share: float = 0.01) -> str:
    """The pyinstrument text report without the frames under ``share`` of the total time."""
    lines = text.splitlines()
    total = next((float(m.group(1)) for line in lines if (m := _TIMED_LINE.match(line))), 0.0)
    kept = [
        line
        for line in lines
        if not (m := _TIMED_LINE.match(line)) or float(m.group(1)) >= share * total
    ]
    return "\n".join(kept) + "\n"


def main(argv: list[str]) -> int:
    seconds = float(argv[0]) if argv else 10.0
    pem, token = bench_keys()
    with tempfile.TemporaryDirectory(prefix="mercato-bench-profile-") as tmp:
        servers = Servers(Path(tmp), can_pin())
        try:
            upstream = free_port()
            constant = servers.uvicorn("bench._gateway_apps:constant_app", upstream, {})
            wait_until_answers(f"http://127.0.0.1:{upstream}/", constant)
            port, full = free_port(), Path(tmp) / "profile.txt"
            gateway = servers.uvicorn(
                "mercato.gateway.app:create_app",
                port,
                gateway_env(pem, f"http://127.0.0.1:{upstream}"),
                name="profiled-gateway",
                under=["pyinstrument", "-r", "text", "--show-all", "-o", str(full)],
            )
            wait_until_answers(f"http://127.0.0.1:{port}/healthz", gateway)
            url = f"http://127.0.0.1:{port}/api/v1/products/5f0c6f4e-7c1b-4f55-9b3e-2f2a1c0e9d11"
            run = wrk(url, seconds, servers.pin, 50, headers=bearer(token))
            print(f"profiled gateway: {run['rps']:.0f} rps (profiler overhead included)")
            gateway.send_signal(signal.SIGINT)
            gateway.wait(timeout=60)  # pyinstrument writes its report on exit
        finally:
            servers.stop()
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / "gateway-profile.txt"
        out.write_text(compact_profile(full.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
