"""What every attribute shares: the type codes, the base class and the raw fallback."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, Self

from turn_relay.stun.errors import StunDecodeError


class AttrType(enum.IntEnum):
    """Attribute type codes (RFC 8489 section 18.3, RFC 8656 section 18)."""

    MAPPED_ADDRESS = 0x0001
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    UNKNOWN_ATTRIBUTES = 0x000A
    CHANNEL_NUMBER = 0x000C
    LIFETIME = 0x000D
    XOR_PEER_ADDRESS = 0x0012
    DATA = 0x0013
    REALM = 0x0014
    NONCE = 0x0015
    XOR_RELAYED_ADDRESS = 0x0016
    REQUESTED_ADDRESS_FAMILY = 0x0017
    EVEN_PORT = 0x0018
    REQUESTED_TRANSPORT = 0x0019
    DONT_FRAGMENT = 0x001A
    MESSAGE_INTEGRITY_SHA256 = 0x001C
    XOR_MAPPED_ADDRESS = 0x0020
    RESERVATION_TOKEN = 0x0022
    SOFTWARE = 0x8022
    FINGERPRINT = 0x8028


def is_comprehension_required(attr_type: int) -> bool:
    """Types 0x0000-0x7FFF must be understood; an unknown one makes a request fail with 420."""
    return attr_type < 0x8000


def attr_name(attr_type: int) -> str:
    """The RFC name of a type code, e.g. ``XOR-MAPPED-ADDRESS``, or its hex value when unknown."""
    try:
        return AttrType(attr_type).name.replace("_", "-")
    except ValueError:
        return f"attribute {attr_type:#06x}"


class Attribute:
    """Base class of typed attributes.

    A subclass sets ``TYPE`` and implements the value codec; the message codec adds the 4-byte
    attribute header and padding. ``transaction_id`` is passed to both for the XOR address types.
    """

    TYPE: ClassVar[int]

    def type_code(self) -> int:
        """The attribute type written on the wire."""
        return self.TYPE

    def encode_value(self, transaction_id: bytes) -> bytes:
        """The attribute value, without header or padding."""
        raise NotImplementedError

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        """Parse a value; raises :class:`StunDecodeError` when it is malformed."""
        raise NotImplementedError


@dataclass(frozen=True)
class UnknownAttribute(Attribute):
    """An attribute this codec has no type for, kept raw so it re-encodes unchanged."""

    type: int
    """The type code, 0x0000-0xFFFF."""
    value: bytes
    """The value, without padding."""

    def __post_init__(self) -> None:
        if not 0 <= self.type <= 0xFFFF:
            raise ValueError(f"attribute type {self.type:#x} does not fit in 16 bits")

    def type_code(self) -> int:
        return self.type

    def encode_value(self, transaction_id: bytes) -> bytes:
        return self.value


def expect_length(value: bytes, size: int) -> None:
    """Raise unless a fixed-size value has exactly ``size`` bytes."""
    if len(value) != size:
        raise StunDecodeError(f"length {len(value)}, expected {size}")
