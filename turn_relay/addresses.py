"""Transport addresses and the 5-tuple an allocation is keyed by (RFC 8656 section 2).

Hosts are text, in the exact form ``socket.inet_ntop`` gives (what asyncio hands a protocol), so
the I/O layer can pass received addresses straight in and the per-packet paths hash plain
tuples of ``str`` and ``int``. Addresses the relay takes from STUN attributes go through
:func:`canonical_host` to reach the same spelling.
"""

from __future__ import annotations

import enum
from ipaddress import IPv4Address, ip_address
from typing import NamedTuple

from turn_relay.stun import AddressFamily, IPAddress

Address = tuple[str, int]
"""``(host, port)``: host as :func:`canonical_host` spells it."""

_COMPATIBLE_MAX = 0xFFFFFFFF  # ::/96, the deprecated "IPv4-compatible" addresses


class Transport(enum.StrEnum):
    """The client-facing transport of a 5-tuple (a ``str`` enum, so it hashes at C speed)."""

    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"


class FiveTuple(NamedTuple):
    """Client and server transport addresses and the transport between them."""

    transport: Transport
    """UDP, TCP or TLS between client and relay."""
    client: Address
    """The client's address as the relay sees it (its server-reflexive address)."""
    server: Address
    """The relay's listening address the client reached."""

    @property
    def is_stream(self) -> bool:
        """True for TCP and TLS, where ChannelData must be padded to a multiple of 4."""
        return self.transport is not Transport.UDP

    def client_label(self) -> str:
        """Stable text naming the client transport address, for binding nonces to it."""
        host, port = self.client
        return f"{self.transport.value}/{host}:{port}"


def host_text(ip: IPAddress) -> str:
    """``ip`` spelled as ``socket.inet_ntop`` spells it.

    Python spells ``::ffff:1.2.3.4`` as ``::ffff:102:304`` before 3.13, and ``::1.2.3.4`` as
    ``::102:304``; glibc's inet_ntop writes the dotted quad in both cases.
    """
    if isinstance(ip, IPv4Address):
        return str(ip)
    mapped = ip.ipv4_mapped
    if mapped is not None:
        return f"::ffff:{mapped}"
    value = int(ip)
    if value <= _COMPATIBLE_MAX and value >> 16:  # ::a.b.c.d with a non-zero 7th group
        return f"::{IPv4Address(value)}"
    return str(ip)


def canonical_host(text: str) -> str:
    """Any spelling of an IP address, in the form ``socket.inet_ntop`` gives; ValueError if none."""
    return host_text(ip_address(text))


def parse_host(text: str) -> IPAddress:
    """The IP address object for a host string; ValueError if it is not one."""
    return ip_address(text)


def family_of(ip: IPAddress) -> AddressFamily:
    """The STUN address family of ``ip``."""
    return AddressFamily.IPV4 if isinstance(ip, IPv4Address) else AddressFamily.IPV6


def host_family(host: str) -> AddressFamily:
    """The STUN address family of a canonical host string (IPv6 hosts contain a colon)."""
    return AddressFamily.IPV6 if ":" in host else AddressFamily.IPV4
