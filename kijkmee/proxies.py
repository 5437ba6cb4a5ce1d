"""The visitor's address behind a reverse proxy (nginx, HAProxy) that kijkmee is told to trust.

Behind a proxy every request comes from the proxy: the session rows would all record the proxy's
address (so a data subject could not be found by theirs) and every per-address limit would be shared
by all visitors. A proxy listed in `trusted_proxies` passes the address it saw in X-Forwarded-For;
only then is that header read, and only addresses added by trusted proxies are skipped (a visitor can
put anything in the header, but cannot make our proxy append a false address). Nothing is logged.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """CIDR ranges (a bare address is a /32 or /128); ValueError for anything else."""
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values)


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in trusted)


def client_address(remote: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str | None:
    """`remote`, unless it is a trusted proxy that passed X-Forwarded-For: then the right-most address
    of that header that is not itself a trusted proxy (the one our first proxy saw). A header that is
    malformed where it matters leaves `remote`."""
    if remote is None or not forwarded_for or not _trusted(remote, trusted):
        return remote
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return remote
        if not _trusted(hop, trusted):
            return hop
    return remote


def forwarded_for_middleware(trusted: Sequence[Network]) -> Middleware:
    """An aiohttp middleware that gives every later handler (pages, Socket.IO, the APIs) the visitor's
    address as `request.remote` when the request came through a trusted proxy."""

    @web.middleware
    async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        visitor = client_address(request.remote, request.headers.get("X-Forwarded-For"), trusted)
        if visitor is not None and visitor != request.remote:
            request = request.clone(remote=visitor)
        return await handler(request)

    return forwarded
