"""The client's address and scheme behind trusted reverse proxies (MAILGATE_TRUSTED_PROXIES).

Like werkzeug's ``ProxyFix``, but the proxies are named by address or
network rather than counted: ``X-Forwarded-For`` and ``X-Forwarded-Proto``
are believed only when the connection comes from a trusted proxy, and the
client is the right-most address of ``X-Forwarded-For`` that is not itself a
trusted proxy. So a client cannot choose its own address by sending the
header, and a chain of trusted proxies (a load balancer, then nginx) works.
The WSGI environ is changed in place, so the rate limiter, the access log
and the links all see the real client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
WSGIApp = Any


def parse_networks(text: str) -> tuple[Network, ...]:
    """Addresses and networks separated by commas or spaces; ValueError names a bad one."""
    networks = []
    for item in text.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {item!r}") from None
    return tuple(networks)


class TrustedProxies:
    """WSGI middleware: REMOTE_ADDR and the URL scheme from trusted proxies' headers."""

    def __init__(self, app: WSGIApp, trusted: Iterable[Network]) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.strip().strip("[]"))
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        peer = environ.get("REMOTE_ADDR", "")
        if self.trusted and self._trusted(peer):
            hops = [h.strip() for h in environ.get("HTTP_X_FORWARDED_FOR", "").split(",")
                    if h.strip()]
            client = peer
            for hop in reversed(hops):
                client = hop
                if not self._trusted(hop):
                    break
            try:
                ipaddress.ip_address(client.strip("[]"))
            except ValueError:
                client = peer   # a forged or broken header: keep the proxy's address
            environ["REMOTE_ADDR"] = client.strip("[]")
            proto = environ.get("HTTP_X_FORWARDED_PROTO", "").split(",")[0].strip().lower()
            if proto in ("http", "https"):
                environ["wsgi.url_scheme"] = proto
        return self.app(environ, start_response)
