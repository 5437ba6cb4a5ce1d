"""Settings of the TURN relay core: one frozen dataclass, checked once by :meth:`RelayConfig.validate`.

Nothing here reads files or the environment; the composition root builds a :class:`RelayConfig`
from its own sources and hands it over.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from turn_relay.addresses import canonical_host
from turn_relay.auth import DEFAULT_CLOCK_SKEW, DEFAULT_NONCE_LIFETIME
from turn_relay.stun import AddressFamily


class RelayConfigError(ValueError):
    """A relay setting cannot work; the message names the field."""


@dataclass(frozen=True)
class RelayConfig:
    """Settings of :class:`turn_relay.server.RelayServer`."""

    secrets: tuple[bytes, ...]
    """TURN REST shared secrets (coturn ``static-auth-secret``), the current one first. Every one is
    accepted, so a secret can be rotated by adding the new one in front of the old."""

    relay_addresses: tuple[str, ...]
    """The addresses relayed transport addresses are allocated on, at most one IPv4 and one IPv6.
    They are what clients are told (XOR-RELAYED-ADDRESS), so they must be reachable by peers."""

    realm: str = "kijkmee"
    """The long-term credential REALM; coturn nodes sharing the secrets must use the same one."""

    credential_clock_skew: float = DEFAULT_CLOCK_SKEW
    """Seconds a TURN REST username is still accepted after the expiry written in it."""

    nonce_lifetime: float = DEFAULT_NONCE_LIFETIME
    """Seconds a NONCE stays valid; after that requests get 438 Stale Nonce and a fresh one."""

    default_lifetime: int = 600
    """Allocation lifetime in seconds when the client asks for less or for none (RFC 8656: 600)."""

    max_lifetime: int = 3600
    """Longest allocation lifetime granted; longer requests are clamped to it (RFC 8656: 3600)."""

    permission_lifetime: int = 300
    """Seconds a permission lives unless refreshed (RFC 8656 fixes it at 300)."""

    channel_lifetime: int = 600
    """Seconds a channel binding lives unless refreshed (RFC 8656 fixes it at 600)."""

    min_port: int = 49152
    """Lowest relayed port (coturn ``min-port``). The range should be reserved for the relay."""

    max_port: int = 65535
    """Highest relayed port (coturn ``max-port``)."""

    listen_addresses: tuple[str, ...] = ()
    """Other IP addresses of this host (the TURN listeners, the HTTPS server). Like the relay
    addresses, peers on them are refused except on relayed ports, so a client cannot use the relay
    to reach the host's own services; relay-to-relay traffic between two allocations still works."""

    max_allocations: int = 10_000
    """Allocations the relay holds in total; one more gets 508 Insufficient Capacity."""

    max_allocations_per_user: int = 32
    """Allocations per USERNAME (one TURN REST credential); one more gets 486 Allocation Quota
    Reached. A browser makes one per peer connection, local interface and TURN URL."""

    max_permissions_per_allocation: int = 64
    """Permissions (peer IP addresses) per allocation; more get 508 Insufficient Capacity."""

    max_channels_per_allocation: int = 64
    """Channel bindings per allocation; more get 508 Insufficient Capacity."""

    bandwidth_limit: int | None = 2_000_000
    """Bytes per second an allocation may relay, both directions together (16 Mbit/s: several
    HD video streams). Bursts of one second's worth pass; excess packets are dropped and counted.
    None removes the cap."""

    allow_peer: tuple[str, ...] = ()
    """CIDR ranges opened although the peer policy denies them by default, e.g. ``10.0.0.0/8`` for
    a relay serving a private network, or ``127.0.0.1/32`` in tests."""

    allow_unencrypted: bool = False
    """Relay any payload. Off by default: only STUN, DTLS and (after DTLS handshakes in both
    directions) SRTP/SRTCP classes of RFC 7983 are relayed."""

    unauthenticated_rate: float = 10.0
    """Unauthenticated requests (Binding, and requests answered 400, 401 or 438) a source IP may
    make per second. Beyond it requests get no answer, so a spoofed source cannot turn the relay
    into a 401 amplifier."""

    unauthenticated_burst: float = 50.0
    """Unauthenticated requests a source IP may make at once (many browsers behind one NAT)."""

    unauthenticated_global_rate: float = 2000.0
    """Unauthenticated requests answered per second from all sources together: the amplification
    budget even when a flood of spoofed sources evicts per-source state."""

    auth_failure_limit: int = 5
    """Authentication failures (bad password, expired or malformed username, with a nonce the
    source really received) after which a source IP is blocked."""

    auth_failure_window: float = 60.0
    """Seconds within which :attr:`auth_failure_limit` failures block a source."""

    auth_block_time: float = 600.0
    """Seconds every request from a blocked source IP is ignored."""

    max_tracked_sources: int = 10_000
    """Source IPs kept in each rate-limit and failure table; the least recently seen is forgotten
    first, so a flood from spoofed sources cannot grow memory."""

    legacy_channels: bool = False
    """Also accept the RFC 5766 channel numbers 0x5000-0x7FFF (coturn's test client picks them).
    RFC 8656 reserves them because their first byte collides with RFC 7983 demultiplexing, so this
    needs :attr:`allow_unencrypted`."""

    dont_fragment: bool = False
    """True if the I/O layer can send relayed datagrams with the DF bit set. When False, an Allocate
    with DONT-FRAGMENT is answered 420 as RFC 8656 section 7.2 asks, listing DONT-FRAGMENT."""

    software: str | None = None
    """A SOFTWARE attribute for every response; None (the default) sends none, to reveal nothing."""

    def validate(self) -> RelayConfig:
        """Raise :class:`RelayConfigError` for a value that cannot work; return self to chain."""
        _check_secrets(self.secrets)
        if self.legacy_channels and not self.allow_unencrypted:
            raise RelayConfigError("legacy_channels: needs allow_unencrypted (they collide with RFC 7983 classes)")
        if not self.realm or len(self.realm) > 127:
            raise RelayConfigError("realm: must be 1 to 127 characters")
        _check_relay_addresses(self.relay_addresses)
        for text in self.listen_addresses:
            _parse_ip("listen_addresses", text)
        for text in self.allow_peer:
            try:
                ipaddress.ip_network(text)
            except ValueError:
                raise RelayConfigError(f"allow_peer: {text!r} is not a CIDR range (host bits zero)") from None
        self._check_lifetimes()
        if not 1024 <= self.min_port <= self.max_port <= 65535:
            raise RelayConfigError(f"min_port, max_port: {self.min_port}..{self.max_port} is not within 1024..65535")
        self._check_positive()
        if self.software is not None and not 0 < len(self.software) <= 127:
            raise RelayConfigError("software: must be 1 to 127 characters, or None")
        return self

    def _check_lifetimes(self) -> None:
        if not 0 < self.default_lifetime <= self.max_lifetime:
            raise RelayConfigError(
                f"default_lifetime, max_lifetime: need 0 < {self.default_lifetime} <= {self.max_lifetime}"
            )
        for name in ("permission_lifetime", "channel_lifetime", "nonce_lifetime", "auth_failure_window"):
            if getattr(self, name) <= 0:
                raise RelayConfigError(f"{name}: must be positive")
        if self.credential_clock_skew < 0 or self.auth_block_time < 0:
            raise RelayConfigError("credential_clock_skew, auth_block_time: must not be negative")

    def _check_positive(self) -> None:
        for name in (
            "max_allocations",
            "max_allocations_per_user",
            "max_permissions_per_allocation",
            "max_channels_per_allocation",
            "unauthenticated_rate",
            "unauthenticated_global_rate",
            "auth_failure_limit",
            "max_tracked_sources",
        ):
            if getattr(self, name) <= 0:
                raise RelayConfigError(f"{name}: must be positive")
        if self.unauthenticated_burst < 1:
            raise RelayConfigError("unauthenticated_burst: must be at least 1")
        if self.bandwidth_limit is not None and self.bandwidth_limit < 1500:
            raise RelayConfigError("bandwidth_limit: must be at least 1500 bytes per second, or None")


def _check_secrets(secrets: tuple[bytes, ...]) -> None:
    if not secrets or not all(isinstance(secret, bytes) and secret for secret in secrets):
        raise RelayConfigError("secrets: at least one is needed and none may be empty")


def _parse_ip(name: str, text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise RelayConfigError(f"{name}: {text!r} is not an IP address") from None


def _check_relay_addresses(addresses: tuple[str, ...]) -> None:
    versions = [_parse_ip("relay_addresses", text) for text in addresses]
    if not versions:
        raise RelayConfigError("relay_addresses: at least one is needed")
    if len({ip.version for ip in versions}) != len(versions):
        raise RelayConfigError("relay_addresses: at most one IPv4 and one IPv6 address")
    for ip in versions:
        if ip.is_unspecified or ip.is_multicast:
            raise RelayConfigError(f"relay_addresses: {ip} cannot be told to clients as a relayed address")


def relay_hosts(config: RelayConfig) -> dict[int, str]:
    """STUN address family code (1 IPv4, 2 IPv6) -> the canonical host of the relay address of that family."""
    return {
        AddressFamily.IPV4 if ipaddress.ip_address(text).version == 4 else AddressFamily.IPV6: canonical_host(text)
        for text in config.relay_addresses
    }
