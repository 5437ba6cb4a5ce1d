"""Plain counters of the relay core; an exporter reads :meth:`RelayMetrics.snapshot`.

The core does not log. Every input it receives either produces an output or adds one to
:attr:`RelayMetrics.drops` under a :class:`DropReason`; no counter holds an address or a name.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class DropReason(enum.StrEnum):
    """Why an input was dropped without an answer."""

    MALFORMED = "malformed"
    """Not STUN or ChannelData, a broken message that cannot be answered (not a request), or a Send
    indication without its attributes or with unknown comprehension-required ones."""
    BAD_FINGERPRINT = "bad-fingerprint"
    """FINGERPRINT present but wrong: not a STUN message after all (RFC 8489 section 7.3)."""
    UNEXPECTED_MESSAGE = "unexpected-message"
    """A response, or an indication other than Send, from a client."""
    RATE_LIMITED = "rate-limited"
    """An unauthenticated request beyond the per-source or global rate."""
    BLOCKED_SOURCE = "blocked-source"
    """A request from a source IP blocked after repeated authentication failures."""
    RETRANSMIT_PENDING = "retransmit-pending"
    """A retransmitted Allocate whose relayed port is still being opened; the answer will follow."""
    NO_ALLOCATION = "no-allocation"
    """Data on a 5-tuple or relayed address without an allocation."""
    NO_PERMISSION = "no-permission"
    """Data to or from a peer IP without a permission."""
    NO_CHANNEL = "no-channel"
    """ChannelData on a channel number that is not bound (or has expired)."""
    PEER_DENIED = "peer-denied"
    """Data to or from an address the peer policy refuses."""
    PEER_FAMILY_MISMATCH = "peer-family-mismatch"
    """A Send indication to a peer of another address family than the allocation."""
    NOT_RFC7983 = "not-rfc7983"
    """A payload that is not STUN, DTLS or RTP/RTCP by its first byte (encrypted-only mode)."""
    RTP_BEFORE_DTLS = "rtp-before-dtls"
    """RTP/RTCP before DTLS handshake records passed both ways on that path (encrypted-only mode)."""
    BANDWIDTH = "bandwidth"
    """Over the allocation's bandwidth cap."""
    TOO_LARGE = "too-large"
    """A peer datagram too large for the Data indication that would carry it (over 65,504 bytes)."""


@dataclass(eq=False)
class RelayMetrics:
    """Counters since start-up; all are plain ints the core increments."""

    drops: dict[DropReason, int] = field(default_factory=lambda: dict.fromkeys(DropReason, 0))
    """Inputs dropped, by reason."""
    requests: dict[str, int] = field(default_factory=dict)
    """Requests received, by method name (``allocate``, ``binding``, ...)."""
    successes_sent: int = 0
    """Success responses sent."""
    errors_sent: dict[int, int] = field(default_factory=dict)
    """Error responses sent, by error code."""
    auth_failures: int = 0
    """Requests whose credentials were refused (bad integrity, expired or malformed username)."""
    sources_blocked: int = 0
    """Times a source IP was blocked after :attr:`RelayConfig.auth_failure_limit` failures."""
    allocations_created: int = 0
    """Allocations whose relayed port opened."""
    allocations_deleted: int = 0
    """Allocations ended by the client (Refresh with lifetime 0, or its TCP/TLS connection closing)."""
    allocations_expired: int = 0
    """Allocations ended because their lifetime ran out."""
    relay_open_failures: int = 0
    """Relayed ports the I/O layer could not open."""
    media_paths_refused: int = 0
    """DTLS handshakes not tracked because an allocation already tracks its maximum of paths."""
    packets_to_peer: int = 0
    """Packets relayed from clients to peers."""
    bytes_to_peer: int = 0
    """Payload bytes relayed from clients to peers."""
    packets_to_client: int = 0
    """Packets relayed from peers to clients."""
    bytes_to_client: int = 0
    """Payload bytes relayed from peers to clients."""

    def snapshot(self) -> dict[str, int]:
        """Flat ``name -> value`` map, e.g. ``drops.rtp-before-dtls``, ``errors_sent.401``."""
        flat: dict[str, int] = {}
        for name, value in vars(self).items():
            if isinstance(value, dict):
                flat.update({f"{name}.{key}": count for key, count in value.items()})
            else:
                flat[name] = value
        return flat

    @property
    def dropped(self) -> int:
        """All drops, whatever the reason."""
        return sum(self.drops.values())
