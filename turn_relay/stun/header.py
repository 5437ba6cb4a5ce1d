"""The 20-byte STUN message header (RFC 8489 section 5) and the message type's method/class split."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from turn_relay.stun.errors import StunDecodeError

MAGIC_COOKIE = 0x2112A442
HEADER_SIZE = 20
TRANSACTION_ID_SIZE = 12
MAX_METHOD = 0xFFF

_HEADER = struct.Struct("!HHI12s")


class Method(enum.IntEnum):
    """STUN methods this relay knows (RFC 8489, RFC 8656)."""

    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009


class MessageClass(enum.IntEnum):
    """The two class bits C1 C0 of the message type."""

    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11


_METHODS = {method.value: method for method in Method}
_CLASSES = tuple(MessageClass)


def pack_message_type(method: int, message_class: MessageClass) -> int:
    """Interleave the 12 method bits and the 2 class bits into the 14-bit message type."""
    if not 0 <= method <= MAX_METHOD:
        raise ValueError(f"method {method:#x} does not fit in 12 bits")
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((message_class & 0b01) << 4)
        | ((message_class & 0b10) << 7)
    )


def unpack_message_type(message_type: int) -> tuple[int, MessageClass]:
    """Split a 14-bit message type into (method, class); a known method comes back as :class:`Method`."""
    method = (message_type & 0x000F) | ((message_type & 0x00E0) >> 1) | ((message_type & 0x3E00) >> 2)
    message_class = _CLASSES[((message_type & 0x0010) >> 4) | ((message_type & 0x0100) >> 7)]
    return _METHODS.get(method, method), message_class


@dataclass(frozen=True)
class StunHeader:
    """A decoded STUN header."""

    method: int
    """The method: a :class:`Method` when known, else the raw 12-bit number."""
    message_class: MessageClass
    """Request, indication, success or error response."""
    length: int
    """Length of the attributes that follow the header, in bytes (a multiple of 4)."""
    transaction_id: bytes
    """The 96-bit transaction id."""


def decode_header(data: bytes) -> StunHeader:
    """Decode and check the header of a STUN message (not the attributes).

    Checks the size, the two leading zero bits, the magic cookie and that the length is a multiple
    of 4. Does not compare the length with ``len(data)``: a stream framer reads the header first.
    """
    if len(data) < HEADER_SIZE:
        raise StunDecodeError(f"message of {len(data)} bytes is shorter than the 20-byte header")
    message_type, length, cookie, transaction_id = _HEADER.unpack_from(data)
    if message_type & 0xC000:
        raise StunDecodeError(f"first two bits are {message_type >> 14:02b}, not 00")
    if cookie != MAGIC_COOKIE:
        raise StunDecodeError(f"bad magic cookie {cookie:#010x}")
    method, message_class = unpack_message_type(message_type)
    header = StunHeader(method, message_class, length, transaction_id)
    if length % 4:
        raise StunDecodeError(f"length {length} is not a multiple of 4", header)
    return header


def encode_header(method: int, message_class: MessageClass, length: int, transaction_id: bytes) -> bytes:
    """Encode a header; ``length`` is the size of the attributes that follow."""
    if len(transaction_id) != TRANSACTION_ID_SIZE:
        raise ValueError(f"transaction id is {len(transaction_id)} bytes, not 12")
    if not 0 <= length <= 0xFFFF or length % 4:
        raise ValueError(f"attribute length {length} is not a multiple of 4 in 0..65532")
    return _HEADER.pack(pack_message_type(method, message_class), length, MAGIC_COOKIE, transaction_id)
