"""MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT values (RFC 8489 14.5-14.7).

These hold the values as read. Computing and checking them needs the whole message: see
:mod:`turn_relay.stun.integrity` and :func:`turn_relay.stun.message.encode_message`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Self

from turn_relay.stun.attributes.base import Attribute, AttrType, expect_length
from turn_relay.stun.errors import StunDecodeError

SHA1_SIZE = 20
SHA256_MIN_SIZE = 16
SHA256_SIZE = 32


@dataclass(frozen=True)
class MessageIntegrity(Attribute):
    """MESSAGE-INTEGRITY: HMAC-SHA1 over the message up to this attribute."""

    TYPE = AttrType.MESSAGE_INTEGRITY

    hmac: bytes
    """The 20-byte HMAC-SHA1."""

    def __post_init__(self) -> None:
        if len(self.hmac) != SHA1_SIZE:
            raise ValueError(f"HMAC-SHA1 is {len(self.hmac)} bytes, not 20")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return self.hmac

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        expect_length(value, SHA1_SIZE)
        return cls(value)


@dataclass(frozen=True)
class MessageIntegritySha256(Attribute):
    """MESSAGE-INTEGRITY-SHA256: HMAC-SHA256, possibly truncated to 16-28 bytes."""

    TYPE = AttrType.MESSAGE_INTEGRITY_SHA256

    hmac: bytes
    """The HMAC-SHA256 or its first 16, 20, 24 or 28 bytes."""

    def __post_init__(self) -> None:
        size = len(self.hmac)
        if not SHA256_MIN_SIZE <= size <= SHA256_SIZE or size % 4:
            raise ValueError(f"length {size} is not a multiple of 4 in 16..32")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return self.hmac

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        try:
            return cls(value)
        except ValueError as exc:
            raise StunDecodeError(str(exc)) from None


@dataclass(frozen=True)
class Fingerprint(Attribute):
    """FINGERPRINT: CRC-32 of the message up to this attribute, XOR 0x5354554E."""

    TYPE = AttrType.FINGERPRINT

    crc: int
    """The 32-bit value as sent (already XOR-ed)."""

    def __post_init__(self) -> None:
        if not 0 <= self.crc <= 0xFFFFFFFF:
            raise ValueError(f"fingerprint {self.crc:#x} does not fit in 32 bits")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return struct.pack("!I", self.crc)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        expect_length(value, 4)
        (crc,) = struct.unpack("!I", value)
        return cls(crc)
