"""Which peers the relay may talk to: deny by default everything that is not the public Internet.

A TURN relay sends UDP wherever a client asks. Without this policy any holder of credentials
could reach the relay host's loopback, the operator's private networks or link-local metadata
services (169.254.169.254). Every IPv6 form that carries an IPv4 address (mapped, compatible,
SIIT, NAT64, 6to4, Teredo) is judged by the IPv4 address inside it too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from turn_relay.addresses import host_text
from turn_relay.stun import IPAddress

Network = IPv4Network | IPv6Network

DENIED_IPV4: tuple[IPv4Network, ...] = tuple(
    IPv4Network(text)
    for text in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the relay host itself on Linux
        "10.0.0.0/8",  # RFC 1918
        "100.64.0.0/10",  # RFC 6598 carrier-grade NAT
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local, cloud metadata services
        "172.16.0.0/12",  # RFC 1918
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.88.99.0/24",  # deprecated 6to4 relay anycast
        "192.168.0.0/16",  # RFC 1918
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, with 255.255.255.255 broadcast
    )
)
"""IPv4 ranges no peer may be in."""

DENIED_IPV6: tuple[IPv6Network, ...] = tuple(
    IPv6Network(text)
    for text in (
        "::/128",  # unspecified
        "::1/128",  # loopback
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): translates into private IPv4
        "100::/64",  # discard-only
        "2001:2::/48",  # benchmarking
        "2001:10::/28",  # ORCHID (deprecated)
        "2001:20::/28",  # ORCHIDv2
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation (RFC 9637)
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
"""IPv6 ranges no peer may be in (the IPv4-carrying ranges are judged by their IPv4 address)."""

_NAT64 = IPv6Network("64:ff9b::/96")
_SIIT = IPv6Network("::ffff:0:0:0/96")
_IPV4_BITS = 0xFFFFFFFF


def embedded_ipv4(ip: IPv6Address) -> tuple[IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address carries: mapped (``::ffff:a.b.c.d``), compatible
    (``::a.b.c.d``), SIIT (``::ffff:0:a.b.c.d``), NAT64 (``64:ff9b::/96``), 6to4 (``2002::/16``)
    and Teredo (``2001::/32``: server and client)."""
    value = int(ip)
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if value >> 32 == 0 or ip in _SIIT or ip in _NAT64:
        return (IPv4Address(value & _IPV4_BITS),)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo
    return ()


@dataclass(frozen=True)
class PeerPolicy:
    """Decides whether the relay may exchange packets with a peer transport address."""

    allow: tuple[Network, ...] = ()
    """Ranges opened although denied by default (``RelayConfig.allow_peer``)."""
    own_hosts: frozenset[str] = frozenset()
    """This host's addresses (canonical text) not opened by :attr:`allow`: refused unless the port
    is a relayed port."""
    relay_ports: range = range(0)
    """The relayed ports: on the host's own addresses these belong to other allocations."""

    @classmethod
    def build(cls, allow: Iterable[str], own_hosts: Iterable[str], relay_ports: range) -> PeerPolicy:
        """From configuration text; raises ValueError on a malformed range or address."""
        opened = tuple(ip_network(text) for text in allow)
        own = frozenset(
            host_text(ip)
            for ip in map(ip_address, own_hosts)
            if not any(ip.version == network.version and ip in network for network in opened)
        )
        return cls(opened, own, relay_ports)

    def allows(self, ip: IPAddress, port: int) -> bool:
        """True if the relay may send to, and accept from, ``ip``:``port``."""
        if port == 0:
            return False
        if self._explicitly_allowed(ip):  # an operator's own range wins over the IPv4 inside it (::1)
            return True
        forms: tuple[IPAddress, ...] = (ip,)
        if isinstance(ip, IPv6Address):
            forms += embedded_ipv4(ip)
        return all(self._form_allowed(form, port) for form in forms)

    def allows_host(self, host: str, port: int) -> bool:
        """:meth:`allows` for a host string; False if it is not an IP address."""
        try:
            ip = ip_address(host)
        except ValueError:
            return False
        return self.allows(ip, port)

    def is_own(self, ip: IPAddress) -> bool:
        """True if ``ip`` (or an IPv4 address inside it) is one of :attr:`own_hosts`; such a peer is
        allowed only on :attr:`relay_ports`. Stored with a permission so the per-packet check of a
        peer's port is one set lookup."""
        forms: tuple[IPAddress, ...] = (ip,)
        if isinstance(ip, IPv6Address):
            forms += embedded_ipv4(ip)
        return any(host_text(form) in self.own_hosts for form in forms)

    def _explicitly_allowed(self, ip: IPAddress) -> bool:
        return any(ip.version == network.version and ip in network for network in self.allow)

    def _form_allowed(self, ip: IPAddress, port: int) -> bool:
        if self._explicitly_allowed(ip):
            return True
        denied = DENIED_IPV4 if isinstance(ip, IPv4Address) else DENIED_IPV6
        if any(ip in network for network in denied):
            return False
        return host_text(ip) not in self.own_hosts or port in self.relay_ports
