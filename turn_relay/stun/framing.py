"""Telling STUN from ChannelData, and cutting a TCP/TLS byte stream into capped frames (RFC 8656 12.5)."""

from __future__ import annotations

import enum
import struct

from turn_relay.stun.channel_data import CHANNEL_HEADER_SIZE, padded_size
from turn_relay.stun.errors import StunDecodeError
from turn_relay.stun.header import HEADER_SIZE

DEFAULT_MAX_FRAME_SIZE = 16 * 1024
"""Largest frame a stream may carry unless configured otherwise (h11 caps events at 16 KiB too).

Browsers send RTP and SCTP packets of about 1,200 bytes through TURN, so this is generous."""

_LENGTH = struct.Struct("!H")


class PacketKind(enum.Enum):
    """What the first byte of a packet or frame says it is."""

    STUN = "stun"
    CHANNEL_DATA = "channel-data"
    OTHER = "other"


def classify(data: bytes | bytearray, legacy_channels: bool = False) -> PacketKind:
    """STUN if the first two bits are 00, ChannelData for 0x40-0x4F (channels 0x4000-0x4FFF; with
    ``legacy_channels`` also RFC 5766's 0x50-0x7F), else OTHER."""
    if not data:
        return PacketKind.OTHER
    first = data[0]
    if first < 0x40:
        return PacketKind.STUN
    if first < (0x80 if legacy_channels else 0x50):
        return PacketKind.CHANNEL_DATA
    return PacketKind.OTHER


def next_frame_size(
    buffer: bytes | bytearray, max_size: int = DEFAULT_MAX_FRAME_SIZE, legacy_channels: bool = False
) -> int | None:
    """Size of the frame at the start of ``buffer``, or None until its first 4 bytes are there.

    A STUN frame is 20 + length bytes (length a multiple of 4); a ChannelData frame is 4 + length
    rounded up to a multiple of 4 (padding is mandatory on streams). Raises :class:`StunDecodeError`
    for anything else or for a frame larger than ``max_size``: the stream can not be resynchronised
    and must be closed.
    """
    if len(buffer) < 4:
        return None
    kind = classify(buffer, legacy_channels)
    length: int = _LENGTH.unpack_from(buffer, 2)[0]
    if kind is PacketKind.STUN:
        if length % 4:
            raise StunDecodeError(f"length {length} is not a multiple of 4")
        size = HEADER_SIZE + length
    elif kind is PacketKind.CHANNEL_DATA:
        size = CHANNEL_HEADER_SIZE + padded_size(length)
    else:
        raise StunDecodeError(f"first byte {buffer[0]:#04x} starts neither STUN nor ChannelData")
    if size > max_size:
        raise StunDecodeError(f"frame of {size} bytes exceeds the {max_size}-byte cap")
    return size


class StreamFramer:
    """Buffers a TCP/TLS byte stream and hands out whole frames. Pure: it does no I/O.

    The buffer never holds more than one incomplete frame, which ``max_size`` caps.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_FRAME_SIZE, legacy_channels: bool = False) -> None:
        if max_size < HEADER_SIZE:
            raise ValueError(f"max_size {max_size} is smaller than a STUN header")
        self._max_size = max_size
        self._legacy_channels = legacy_channels
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the frames now complete, in order.

        Raises :class:`StunDecodeError` on a frame that is not STUN or ChannelData or too large;
        the frames complete before the bad one are lost with it, as the connection must close.
        """
        self._buffer += data
        frames: list[bytes] = []
        while (size := next_frame_size(self._buffer, self._max_size, self._legacy_channels)) is not None:
            if size > len(self._buffer):
                break
            frames.append(bytes(self._buffer[:size]))
            del self._buffer[:size]
        return frames
