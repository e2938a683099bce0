"""deploy/nginx: `nginx -t` passes on it as committed and with its TLS block uncommented,
and, run for real in front of an upstream that echoes what it receives, it sends the proxy
headers over kept-alive HTTP/1.1, gzips JSON, caps bodies at the gateway's MAX_BODY_SIZE,
passes static files to the gateway, keeps /metrics to this machine and limits the API's rate."""

from __future__ import annotations

import datetime
import json
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from mercato.gateway.settings import GatewaySettings
from support.deploy_topology import NGINX_DIR, Nginx
from support.servers import free_port

CERTIFICATES = "/etc/letsencrypt/live/shop.example.com/"


def nginx_test(nginx: str, prefix: Path, conf: Path) -> subprocess.CompletedProcess[str]:
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [nginx, "-t", "-p", f"{prefix}/", "-c", str(conf), "-e", "logs/error.log"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_nginx_accepts_the_configuration_as_committed(nginx: str, tmp_path: Path) -> None:
    result = nginx_test(nginx, tmp_path, NGINX_DIR / "nginx.conf")
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_the_body_limit_is_the_gateways(nginx: str) -> None:
    locations = (NGINX_DIR / "locations.conf").read_text()
    limit = re.search(r"client_max_body_size (\d+)m;", locations)
    assert limit is not None
    assert int(limit.group(1)) * 1024 * 1024 == GatewaySettings().max_body_size


def self_signed(directory: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shop.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    directory.mkdir(parents=True)
    (directory / "fullchain.pem").write_bytes(pem)
    (directory / "chain.pem").write_bytes(pem)
    (directory / "privkey.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def with_tls(site: str, certificates: Path) -> str:
    """mercato.conf with its HTTPS servers uncommented in place of the plain one."""
    plain, commented = site.split("# HTTPS:", 1)
    plain = plain[: plain.index("server {")]
    lines = commented.splitlines()[1:]
    uncommented = [line[2:] if line.startswith("# ") else line.lstrip("#") for line in lines]
    return plain + "\n".join(uncommented).replace(CERTIFICATES, f"{certificates}/")


def test_the_tls_servers_are_valid_once_uncommented(nginx: str, tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    for source in NGINX_DIR.glob("*.conf"):
        (conf / source.name).write_text(source.read_text())
    self_signed(tmp_path / "certificates")
    site = with_tls((NGINX_DIR / "mercato.conf").read_text(), tmp_path / "certificates")
    assert "ssl_stapling on;" in site
    assert "return 301 https://$host$request_uri;" in site
    (conf / "mercato.conf").write_text(site)
    result = nginx_test(nginx, tmp_path, conf / "nginx.conf")
    assert result.returncode == 0, result.stderr


class Echo(BaseHTTPRequestHandler):
    """Answers every request with what it received, as JSON (padded past gzip's minimum)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.answer(b"")

    def do_POST(self) -> None:
        self.answer(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

    def answer(self, body: bytes) -> None:
        received: dict[str, Any] = {
            "version": self.request_version,
            "path": self.path,
            "client_port": self.client_address[1],
            "headers": {name.lower(): value for name, value in self.headers.items()},
            "body_bytes": len(body),
            "padding": "x" * 2048,
        }
        payload = json.dumps(received).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site(nginx: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    """deploy/nginx on a free port in front of the echo upstream."""
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    proxy = Nginx(
        tmp_path_factory.mktemp("nginx"), free_port(), [f"127.0.0.1:{upstream.server_port}"]
    )
    try:
        proxy.start()
        yield proxy
    finally:
        proxy.stop()
        upstream.shutdown()
        upstream.server_close()


def echoed(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


@pytest.mark.deploy
def test_the_proxy_headers_reach_the_gateway(site: Nginx) -> None:
    with httpx.Client(base_url=site.url, timeout=10) as client:
        named = echoed(client.get("/api/v1/products", headers={"X-Request-ID": "client-id-1"}))
        unnamed = echoed(client.get("/api/v1/products"))
    headers = named["headers"]
    assert named["version"] == "HTTP/1.1"
    assert "connection" not in headers  # Connection "": kept alive, not closed
    assert headers["host"] == "127.0.0.1"
    assert headers["x-real-ip"] == "127.0.0.1"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == "127.0.0.1"
    assert headers["x-request-id"] == "client-id-1"
    assert re.fullmatch(r"[0-9a-f]{32}", unnamed["headers"]["x-request-id"])


@pytest.mark.deploy
def test_a_client_chain_is_extended_not_replaced(site: Nginx) -> None:
    answer = httpx.get(
        f"{site.url}/api/v1/products", headers={"X-Forwarded-For": "198.51.100.7"}, timeout=10
    )
    assert echoed(answer)["headers"]["x-forwarded-for"] == "198.51.100.7, 127.0.0.1"


@pytest.mark.deploy
def test_connections_to_the_upstream_are_kept_alive(site: Nginx) -> None:
    with httpx.Client(base_url=site.url, timeout=10) as client:
        ports = {echoed(client.get("/api/v1/products"))["client_port"] for _ in range(10)}
    assert len(ports) <= 2  # one per nginx worker at most, not one per request


@pytest.mark.deploy
def test_json_is_gzipped(site: Nginx) -> None:
    answer = httpx.get(f"{site.url}/api/v1/products", timeout=10)  # httpx accepts gzip
    assert answer.headers["content-encoding"] == "gzip"
    assert answer.headers["vary"] == "Accept-Encoding"
    assert answer.json()["version"] == "HTTP/1.1"


@pytest.mark.deploy
def test_bodies_above_the_gateways_limit_are_refused(site: Nginx) -> None:
    limit = GatewaySettings().max_body_size
    with httpx.Client(base_url=site.url, timeout=30) as client:
        at_limit = client.post("/api/v1/orders", content=b"x" * limit)
        above = client.post("/api/v1/orders", content=b"x" * (limit + 1))
    assert echoed(at_limit)["body_bytes"] == limit
    assert above.status_code == 413


@pytest.mark.deploy
def test_static_files_come_from_the_gateway_unlogged(site: Nginx) -> None:
    answer = echoed(httpx.get(f"{site.url}/static/style.css", timeout=10))

    assert answer["path"] == "/static/style.css"
    log = site.prefix / "logs" / "access.log"
    assert not log.exists() or "/static/" not in log.read_text()


@pytest.mark.deploy
def test_metrics_answer_this_machine_only(site: Nginx) -> None:
    assert httpx.get(f"{site.url}/metrics", timeout=10).status_code == 200
    outside = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=outside, timeout=10) as client:
        assert client.get(f"{site.url}/metrics").status_code == 403
        assert client.get(f"{site.url}/api/v1/products").status_code == 200


def pipelined_statuses(url: str, path: str, count: int, local_address: str) -> list[int]:
    """``count`` GETs of ``path`` written at once on one connection (HTTP/1.1 pipelining, so
    that nginx sees them faster than the zone's rate whatever this machine's load)."""
    port = int(url.rsplit(":", 1)[1])
    requests = [f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"] * (count - 1)
    requests.append(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    with socket.create_connection(
        ("127.0.0.1", port), timeout=30, source_address=(local_address, 0)
    ) as sock:
        sock.sendall("".join(requests).encode())
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", received)]


@pytest.mark.deploy
def test_the_api_rate_limit_zone_refuses_a_flood(site: Nginx) -> None:
    # Eight connections at once from 127.0.0.3 (a zone entry of its own): requests arrive
    # faster than the zone's 50 a second refills its burst of 100, whatever the load.
    with ThreadPoolExecutor(8) as pool:
        runs = list(
            pool.map(
                lambda _: pipelined_statuses(site.url, "/api/v1/products", 100, "127.0.0.3"),
                range(8),
            )
        )
    statuses = [status for run in runs for status in run]
    assert len(statuses) == 800
    assert set(statuses) == {200, 429}
    assert 101 <= statuses.count(200) < 400
    assert pipelined_statuses(site.url, "/docs", 3, "127.0.0.3") == [200] * 3  # not the API
