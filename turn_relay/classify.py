"""The encrypted-only gate: relay STUN, DTLS and, once DTLS has run, SRTP/SRTCP (RFC 7983 classes).

WebRTC multiplexes STUN (ICE checks), DTLS (key exchange, data channels) and SRTP/SRTCP on one
transport; RFC 7983 tells them apart by the first byte. A relay that forwards only these classes,
and RTP-class packets only on a path where DTLS handshake records have passed in both directions,
cannot be used to carry plain RTP or arbitrary UDP: the media it relays was keyed by DTLS.
The check is heuristic (the relay cannot decrypt, so it cannot prove SRTP), but it stops a
client that never ran DTLS with its peer.
"""

from __future__ import annotations

import enum

from turn_relay.metrics import DropReason


class PayloadClass(enum.IntEnum):
    """RFC 7983 demultiplexing classes the relay cares about."""

    OTHER = 0
    STUN = 1
    DTLS = 2
    RTP = 3
    """RTP or RTCP (first byte 128-191); SRTP/SRTCP on a WebRTC path."""


def _class_of(first: int) -> PayloadClass:
    if first <= 3:
        return PayloadClass.STUN
    if 20 <= first <= 63:
        return PayloadClass.DTLS
    if 128 <= first <= 191:
        return PayloadClass.RTP
    return PayloadClass.OTHER


PAYLOAD_CLASS: tuple[PayloadClass, ...] = tuple(_class_of(first) for first in range(256))
"""First byte -> class, a table so the per-packet path is one index."""

_HANDSHAKE = 22
_DTLS_MAJOR = 0xFE
_DTLS_RECORD_HEADER = 13


def is_dtls_handshake(payload: bytes) -> bool:
    """True for a DTLS 1.0/1.2 plaintext record of content type handshake (22): ClientHello,
    ServerHello and the rest of the handshake flights; DTLS 1.3 uses the same first records."""
    return len(payload) >= _DTLS_RECORD_HEADER and payload[0] == _HANDSHAKE and payload[1] == _DTLS_MAJOR


class MediaPath:
    """What the gate knows about one (allocation, peer transport address) path."""

    __slots__ = ("from_client", "from_peer", "keyed")

    def __init__(self) -> None:
        self.from_client = False
        """A DTLS handshake record went from the client towards the peer."""
        self.from_peer = False
        """A DTLS handshake record came from the peer towards the client."""
        self.keyed = False
        """Both directions seen: RTP-class packets may pass."""

    def check(self, payload: bytes, from_client: bool) -> DropReason | None:
        """None if ``payload`` may be relayed on this path, else why not; notes handshakes."""
        kind = PAYLOAD_CLASS[payload[0]] if payload else PayloadClass.OTHER
        if kind is PayloadClass.RTP:
            return None if self.keyed else DropReason.RTP_BEFORE_DTLS
        if kind is PayloadClass.DTLS:
            if not self.keyed and is_dtls_handshake(payload):
                if from_client:
                    self.from_client = True
                else:
                    self.from_peer = True
                self.keyed = self.from_client and self.from_peer
            return None
        if kind is PayloadClass.STUN:
            return None
        return DropReason.NOT_RFC7983


def check_without_path(payload: bytes) -> DropReason | None:
    """The gate for a path with no state yet: STUN and DTLS pass, RTP waits, the rest is dropped."""
    kind = PAYLOAD_CLASS[payload[0]] if payload else PayloadClass.OTHER
    if kind is PayloadClass.RTP:
        return DropReason.RTP_BEFORE_DTLS
    return None if kind is not PayloadClass.OTHER else DropReason.NOT_RFC7983
