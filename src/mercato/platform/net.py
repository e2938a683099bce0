"""Who is the client? ``X-Forwarded-For`` is believed only from ``TRUSTED_PROXIES`` (and,
in a backend service, from its gateway: ``INTERNAL_PROXIES``, which no service trusts by
default and which ``mercato up`` sets to the address its own gateway connects from)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import urlsplit

from starlette.types import Scope

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


class TrustedProxies:
    """Resolves the client address of a request behind zero or more trusted proxies."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(item, strict=False) for item in networks
        )
        self.is_trusted = lru_cache(maxsize=1024)(self._is_trusted)

    def _is_trusted(self, address: str) -> bool:
        ip = _parse_ip(address)
        return ip is not None and any(ip in network for network in self.networks)

    @staticmethod
    def peer(scope: Scope) -> str:
        client = scope.get("client")
        return str(client[0]) if client else "unknown"

    @staticmethod
    def forwarded_chain(scope: Scope) -> list[str]:
        values = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"]
        return [part.strip() for value in values for part in value.split(",") if part.strip()]

    def client_address(self, scope: Scope) -> str:
        """The socket peer, or, when the peer is a trusted proxy, the nearest address in
        ``X-Forwarded-For`` that is not itself a trusted proxy."""
        peer = self.peer(scope)
        if not self.is_trusted(peer):
            return peer
        for address in reversed(self.forwarded_chain(scope)):
            if _parse_ip(address) is None:
                break
            if not self.is_trusted(address):
                return address
        return peer

    def forwarded_for(self, scope: Scope) -> str:
        """The ``X-Forwarded-For`` to send upstream: the chain is kept only from a trusted
        peer, so a client cannot choose the address the services see."""
        peer = self.peer(scope)
        if self.is_trusted(peer):
            return ", ".join([*self.forwarded_chain(scope), peer])
        return peer


def connecting_addresses(urls: Iterable[str]) -> list[str]:
    """The addresses a process on this host connects from when it calls ``urls`` served on
    this host: the addresses their host names stand for (a connection to one of the
    host's own addresses leaves from that address), as single-address networks."""
    found: dict[str, None] = {}
    for url in urls:
        host = urlsplit(url).hostname
        if not host:
            continue
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except OSError:
            continue  # not resolvable here: nothing to trust
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            found[str(ipaddress.ip_network(address))] = None
    return list(found)
