"""`mercato serve SERVICE --workers N`: gunicorn with uvicorn workers, metrics summed, every
line structured; and `mercato worker` saying what it consumes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from support.metrics import metric_value
from support.processes import answered
from support.servers import free_port

pytestmark = pytest.mark.e2e


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Embedded defaults, JSON logs, and a HOME of the test's own (gunicorn would put its
    control socket there)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key
        not in {
            "DATABASE_URL",
            "REDIS_URL",
            "BROKER_URL",
            "PROMETHEUS_MULTIPROC_DIR",
            "XDG_RUNTIME_DIR",
            "MERCATO_CONFIG",
        }
    }
    return env | {
        "DATA_DIR": str(tmp_path / "var"),
        "LOG_FORMAT": "json",
        "HOME": str(tmp_path / "home"),
        "SECRETS_DIR": str(tmp_path / "no-secrets"),
        **extra,
    }


@contextmanager
def serving(
    tmp_path: Path, service: str, port: int, env: Mapping[str, str], workers: int = 2
) -> Iterator[tuple[str, Path]]:
    """`mercato serve` until the block ends (SIGTERM); yields its URL and its log file."""
    log_path = tmp_path / f"serve-{service}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mercato", "serve", service, "--workers", str(workers)],
            cwd=tmp_path,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        answered(f"{url}/readyz", process, log_path)
        yield url, log_path
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log_path.read_text()[-4000:]


def request_count(metrics: str, service: str) -> int:
    found = re.search(
        rf'http_requests_total\{{(?=[^}}]*service="{service}")(?=[^}}]*route="/healthz")'
        rf"[^}}]*\}} (\d+)",
        metrics,
    )
    assert found is not None, metrics
    return int(float(found.group(1)))


def test_two_workers_answer_and_metrics_count_every_request(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(tmp_path, PRODUCTS_PORT=str(port))
    files = tmp_path / "var" / "metrics" / "products"
    sent = 0
    with serving(tmp_path, "products", port, env) as (url, log_path), httpx.Client() as client:

        def probe(_: int) -> int:
            with httpx.Client() as own:  # a connection each: any worker may accept it
                return own.get(f"{url}/healthz", headers={"Connection": "close"}).status_code

        # Which worker accepts a connection is the kernel's choice: send batches of
        # concurrent requests until both have answered some (each then has its own file).
        with ThreadPoolExecutor(max_workers=8) as pool:
            while sent == 0 or (len(list(files.glob("counter_*.db"))) < 2 and sent < 400):
                assert set(pool.map(probe, range(20))) == {200}
                sent += 20
        metrics = client.get(f"{url}/metrics").text

    assert len(list(files.glob("counter_*.db"))) == 2
    assert request_count(metrics, "products") == sent  # both workers' requests, summed
    log = log_path.read_text()
    assert "Bad file descriptor" not in log
    lines = [json.loads(line) for line in log.splitlines()]  # every line structured
    assert {line["service"] for line in lines} == {"products"}
    assert {"gunicorn.error", "uvicorn.error"} <= {line["logger"] for line in lines}
    assert not (tmp_path / "home" / ".gunicorn").exists()  # no shared control socket


def test_services_sharing_a_multiprocess_directory_count_apart(tmp_path: Path) -> None:
    shared = tmp_path / "prometheus"
    ports = {"products": free_port(), "users": free_port()}
    env = clean_env(
        tmp_path,
        PROMETHEUS_MULTIPROC_DIR=str(shared),
        PRODUCTS_PORT=str(ports["products"]),
        USERS_PORT=str(ports["users"]),
    )
    with (
        serving(tmp_path, "products", ports["products"], env) as (products, _),
        serving(tmp_path, "users", ports["users"], env) as (users, _),
        httpx.Client(headers={"Connection": "close"}) as client,
    ):
        for _ in range(5):
            client.get(f"{products}/healthz")
        for _ in range(3):
            client.get(f"{users}/healthz")
        products_metrics = client.get(f"{products}/metrics").text
        users_metrics = client.get(f"{users}/metrics").text

    assert request_count(products_metrics, "products") == 5
    assert request_count(users_metrics, "users") == 3
    assert 'service="users"' not in products_metrics
    assert 'service="products"' not in users_metrics
    assert sorted(path.name for path in shared.iterdir()) == ["products", "users"]


def test_serve_waits_for_its_broker_then_exits_1_with_one_line(tmp_path: Path) -> None:
    port, broker_port = free_port(), free_port()
    env = clean_env(
        tmp_path,
        PRODUCTS_PORT=str(port),
        BROKER_URL=f"amqp://guest:hunter2@127.0.0.1:{broker_port}/",
        STARTUP_TIMEOUT="0.5",
    )

    done = subprocess.run(
        [sys.executable, "-m", "mercato", "serve", "products"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"mercato: BROKER_URL (127.0.0.1:{broker_port}) did not answer within 0.5 s"
        " (STARTUP_TIMEOUT)"
    )
    assert "hunter2" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_a_worker_on_the_in_memory_broker_says_what_it_consumes_and_warns(
    tmp_path: Path,
) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mercato", "worker", "--port", str(port)],
        cwd=tmp_path,
        env=clean_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log_path = tmp_path / "unused.log"
    log_path.write_text("")
    try:
        answered(f"http://127.0.0.1:{port}/readyz", process, log_path)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)

    assert "Event worker on the in-memory broker of this process:" in out
    assert "notifications (user.registered, order.confirmed, order.rejected)" in out
    assert f"http://127.0.0.1:{port}" in out
    assert (
        "mercato: warning: BROKER_URL is not set: this process has an in-memory broker of its"
        " own and receives no event another process publishes"
    ) in err


def test_gunicorn_workers_cut_off_a_slow_client_and_refuse_a_huge_head(tmp_path: Path) -> None:
    """The edge limits hold in gunicorn's workers as under `mercato up`: a client still
    sending its head after REQUEST_READ_TIMEOUT gets 408, and a head above MAX_HEADER_BYTES
    gets 431 while it is still arriving."""
    port = free_port()
    env = clean_env(
        tmp_path, PRODUCTS_PORT=str(port), REQUEST_READ_TIMEOUT="1", MAX_HEADER_BYTES="2048"
    )
    with serving(tmp_path, "products", port, env):
        with socket.create_connection(("127.0.0.1", port), timeout=20) as slow:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            slow_answer = read_until_closed(slow)
        with socket.create_connection(("127.0.0.1", port), timeout=20) as huge:
            huge.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: " + b"a" * 4096)
            huge_answer = read_until_closed(huge)

    assert slow_answer.startswith(b"HTTP/1.1 408 "), slow_answer
    assert huge_answer.startswith(b"HTTP/1.1 431 "), huge_answer


def read_until_closed(connection: socket.socket) -> bytes:
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def worker_counts(directory: Path, tmp_path: Path) -> list[int]:
    """The `/healthz` requests each worker counted, read from its own metric file."""
    counts = []
    for number, path in enumerate(sorted(directory.glob("counter_*.db"))):
        alone = tmp_path / f"worker-{number}"
        shutil.rmtree(alone, ignore_errors=True)  # a file an earlier call copied here
        alone.mkdir()  # may be the other worker's: the order of the files can change
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
        text = generate_latest(registry).decode()
        counts.append(int(metric_value(text, "http_requests_total", route="/healthz")))
    return counts


def test_two_workers_sum_their_counters_and_show_each_gauge_once(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(tmp_path, PRODUCTS_PORT=str(port))
    directory = tmp_path / "var" / "metrics" / "products"

    def both_took_some() -> bool:
        counts = worker_counts(directory, tmp_path)
        return len(counts) == 2 and min(counts) > 0

    with serving(tmp_path, "products", port, env) as (url, _), httpx.Client() as client:
        sent = 0
        # Until both workers took some (which one accepts a connection is the kernel's call).
        while sent < 2000 and not both_took_some():
            for _ in range(20):
                client.get(f"{url}/healthz", headers={"Connection": "close"})
            sent += 20
        per_worker = worker_counts(directory, tmp_path)
        metrics = client.get(f"{url}/metrics").text

    assert len(per_worker) == 2
    assert min(per_worker) > 0, per_worker
    assert metric_value(metrics, "http_requests_total", route="/healthz") == sent
    assert sum(per_worker) == sent
    samples = [
        sample for family in text_string_to_metric_families(metrics) for sample in family.samples
    ]
    assert not [s for s in samples if "pid" in s.labels]  # no gauge is split per worker
    backlog = [s for s in samples if s.name == "messaging_outbox_backlog"]
    assert [s.labels for s in backlog] == [{"service": "products"}]
    lag = [s for s in samples if s.name == "messaging_consumer_lag"]
    assert [s.labels for s in lag] == [{"service": "products", "queue": "products"}]
