"""ERROR-CODE and UNKNOWN-ATTRIBUTES (RFC 8489 14.8, 14.13) and the error codes STUN/TURN use."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Self

from turn_relay.stun.attributes.base import Attribute, AttrType
from turn_relay.stun.attributes.text import MAX_TEXT_CHARS, check_text, decode_text
from turn_relay.stun.errors import StunDecodeError

_CLASS_NUMBER = struct.Struct("!xxBB")


class ErrorCode(enum.IntEnum):
    """Error codes of RFC 8489 section 14.8 and RFC 8656 section 19."""

    TRY_ALTERNATE = 300
    BAD_REQUEST = 400
    UNAUTHENTICATED = 401
    FORBIDDEN = 403
    UNKNOWN_ATTRIBUTE = 420
    ALLOCATION_MISMATCH = 437
    STALE_NONCE = 438
    ADDRESS_FAMILY_NOT_SUPPORTED = 440
    WRONG_CREDENTIALS = 441
    UNSUPPORTED_TRANSPORT_PROTOCOL = 442
    PEER_ADDRESS_FAMILY_MISMATCH = 443
    ALLOCATION_QUOTA_REACHED = 486
    SERVER_ERROR = 500
    INSUFFICIENT_CAPACITY = 508

    @property
    def phrase(self) -> str:
        """The reason phrase the RFCs suggest."""
        return _PHRASES[self]


_PHRASES = {
    ErrorCode.TRY_ALTERNATE: "Try Alternate",
    ErrorCode.BAD_REQUEST: "Bad Request",
    ErrorCode.UNAUTHENTICATED: "Unauthenticated",
    ErrorCode.FORBIDDEN: "Forbidden",
    ErrorCode.UNKNOWN_ATTRIBUTE: "Unknown Attribute",
    ErrorCode.ALLOCATION_MISMATCH: "Allocation Mismatch",
    ErrorCode.STALE_NONCE: "Stale Nonce",
    ErrorCode.ADDRESS_FAMILY_NOT_SUPPORTED: "Address Family not Supported",
    ErrorCode.WRONG_CREDENTIALS: "Wrong Credentials",
    ErrorCode.UNSUPPORTED_TRANSPORT_PROTOCOL: "Unsupported Transport Protocol",
    ErrorCode.PEER_ADDRESS_FAMILY_MISMATCH: "Peer Address Family Mismatch",
    ErrorCode.ALLOCATION_QUOTA_REACHED: "Allocation Quota Reached",
    ErrorCode.SERVER_ERROR: "Server Error",
    ErrorCode.INSUFFICIENT_CAPACITY: "Insufficient Capacity",
}


@dataclass(frozen=True)
class ErrorCodeAttribute(Attribute):
    """ERROR-CODE: a 300-699 code and a reason phrase, empty by default (we send no details)."""

    TYPE = AttrType.ERROR_CODE

    code: int
    """The error code, 300-699 (an :class:`ErrorCode` when known)."""
    reason: str = ""
    """Reason phrase for humans; fewer than 128 characters."""

    def __post_init__(self) -> None:
        if not 300 <= self.code <= 699:
            raise ValueError(f"error code {self.code} is not in 300..699")
        check_text(self.reason, MAX_TEXT_CHARS, None)

    @classmethod
    def with_phrase(cls, code: ErrorCode) -> Self:
        """The attribute with the RFC's reason phrase."""
        return cls(code, code.phrase)

    def encode_value(self, transaction_id: bytes) -> bytes:
        return _CLASS_NUMBER.pack(self.code // 100, self.code % 100) + self.reason.encode("utf-8")

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) < 4:
            raise StunDecodeError(f"length {len(value)} is shorter than 4")
        error_class, number = _CLASS_NUMBER.unpack_from(value)
        error_class &= 0x07  # the 21 bits before the class are reserved and ignored
        if not 3 <= error_class <= 6:
            raise StunDecodeError(f"error class {error_class} is not in 3..6")
        if number > 99:
            raise StunDecodeError(f"error number {number} is not in 0..99")
        code = error_class * 100 + number
        try:
            code = ErrorCode(code)
        except ValueError:
            pass
        return cls(code, decode_text(value[4:]))


@dataclass(frozen=True)
class UnknownAttributes(Attribute):
    """UNKNOWN-ATTRIBUTES: the comprehension-required types a 420 response did not understand."""

    TYPE = AttrType.UNKNOWN_ATTRIBUTES

    types: tuple[int, ...]
    """The unknown attribute type codes."""

    def __post_init__(self) -> None:
        for attr_type in self.types:
            if not 0 <= attr_type <= 0xFFFF:
                raise ValueError(f"attribute type {attr_type:#x} does not fit in 16 bits")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return struct.pack(f"!{len(self.types)}H", *self.types)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) % 2:
            raise StunDecodeError(f"length {len(value)} is not a multiple of 2")
        return cls(struct.unpack(f"!{len(value) // 2}H", value))
