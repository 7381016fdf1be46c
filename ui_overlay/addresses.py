"""The client's address as the login throttle counts it: the TCP peer, or, when the peer is one
of SCRIPTFLOW_TRUSTED_PROXIES, the rightmost X-Forwarded-For hop that is not a trusted proxy.

Only the hops our own proxies appended can be believed: anything to the left of the first
untrusted hop was written by the client and may be anything it likes."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from fastapi import Request

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse(value: str) -> Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # [v6]:port
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # v4:port
        value = value.partition(":")[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _trusted(address: Address, networks: Sequence[Network]) -> bool:
    return any(address in net for net in networks)


def real_client(peer: str, forwarded_for: Sequence[str], networks: Sequence[Network]) -> str:
    """The client's address from the TCP peer and the X-Forwarded-For header values."""
    hop = _parse(peer)
    if hop is None or not networks or not _trusted(hop, networks):
        return peer
    hops = [h for value in forwarded_for for h in value.split(",") if h.strip()]
    for raw in reversed(hops):
        address = _parse(raw)
        if address is None:  # not an address: the hop before it is the last one we can name
            break
        hop = address
        if not _trusted(address, networks):
            break
    return str(hop)


def client_address(request: Request) -> str:
    peer = request.client.host if request.client else "?"
    networks = request.app.state.settings.trusted_proxy_networks
    if not networks:
        return peer
    return real_client(peer, request.headers.getlist("x-forwarded-for"), networks)
