"""ChannelData messages (RFC 8656 section 12.4): 4-byte header, then application data."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from turn_relay.stun.errors import StunDecodeError

CHANNEL_MIN = 0x4000
CHANNEL_MAX = 0x4FFF
CHANNEL_HEADER_SIZE = 4
MAX_CHANNEL_DATA = 0xFFFF

_HEADER = struct.Struct("!HH")


def is_channel_number(number: int) -> bool:
    """True for the channel numbers a client may bind: 0x4000-0x4FFF."""
    return CHANNEL_MIN <= number <= CHANNEL_MAX


def padded_size(length: int) -> int:
    """``length`` rounded up to a multiple of 4."""
    return length + (-length % 4)


@dataclass(frozen=True)
class ChannelData:
    """One ChannelData message."""

    channel: int
    """The channel number, 0x4000-0x4FFF."""
    data: bytes
    """The application data, without padding."""

    def __post_init__(self) -> None:
        if not is_channel_number(self.channel):
            raise ValueError(f"channel number {self.channel:#06x} is not in 0x4000..0x4FFF")
        if len(self.data) > MAX_CHANNEL_DATA:
            raise ValueError(f"{len(self.data)} bytes of data do not fit in 16 bits")


def encode_channel_data(message: ChannelData, *, stream: bool) -> bytes:
    """Encode; over a stream (TCP, TLS) the data is padded to a multiple of 4 with zeros."""
    frame = _HEADER.pack(message.channel, len(message.data)) + message.data
    return frame + bytes(-len(frame) % 4) if stream else frame


def decode_channel_data(data: bytes, *, stream: bool) -> ChannelData:
    """Decode one ChannelData message; raises only :class:`StunDecodeError`.

    Over a stream, ``data`` is exactly one frame with its padding (see
    :func:`turn_relay.stun.framing.next_frame_size`). In a datagram the padding is optional, so up
    to 3 trailing bytes are accepted and ignored.
    """
    data = bytes(data)
    if len(data) < CHANNEL_HEADER_SIZE:
        raise StunDecodeError(f"ChannelData of {len(data)} bytes is shorter than the 4-byte header")
    channel, length = _HEADER.unpack_from(data)
    if not is_channel_number(channel):
        raise StunDecodeError(f"channel number {channel:#06x} is not in 0x4000..0x4FFF")
    available = len(data) - CHANNEL_HEADER_SIZE
    if length > available:
        raise StunDecodeError(f"ChannelData length {length} overruns the {available} bytes after the header")
    trailing, padding = available - length, padded_size(length) - length
    if trailing > padding or (stream and trailing != padding):
        raise StunDecodeError(
            f"ChannelData length {length} leaves {trailing} trailing bytes, "
            f"{'exactly' if stream else 'at most'} {padding} allowed"
        )
    return ChannelData(channel, data[CHANNEL_HEADER_SIZE : CHANNEL_HEADER_SIZE + length])
