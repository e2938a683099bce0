"""Client addresses: ``X-Forwarded-For`` only from trusted peers, and the addresses a local
gateway connects from."""

from __future__ import annotations

from mercato.platform.net import TrustedProxies, connecting_addresses


def scope(peer: str, forwarded: str | None = None) -> dict[str, object]:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return {"type": "http", "client": (peer, 40000), "headers": headers}


def test_no_peer_is_trusted_without_configuration() -> None:
    nobody = TrustedProxies([])
    for peer in ("127.0.0.1", "::1", "10.0.0.1"):
        assert nobody.client_address(scope(peer, "198.51.100.1")) == peer


def test_a_trusted_peer_names_the_client() -> None:
    gateway = TrustedProxies(["127.0.0.1/32"])
    assert gateway.client_address(scope("127.0.0.1", "198.51.100.1")) == "198.51.100.1"
    assert gateway.client_address(scope("127.0.0.2", "198.51.100.1")) == "127.0.0.2"


def test_a_gateway_on_this_host_connects_from_the_address_it_calls() -> None:
    urls = ["http://127.0.0.1:8004", "http://127.0.0.1:8001", "http://[::1]:8003"]
    assert connecting_addresses(urls) == ["127.0.0.1/32", "::1/128"]
    assert connecting_addresses(["http://192.0.2.10:8002"]) == ["192.0.2.10/32"]
    assert connecting_addresses(["not a url"]) == []
