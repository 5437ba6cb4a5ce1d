"""TURN attributes of RFC 8656 section 18 (the XOR address ones live in :mod:`.address`)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Self

from turn_relay.stun.attributes.base import Attribute, AttrType, expect_length

PROTOCOL_UDP = 17
"""REQUESTED-TRANSPORT value for UDP, the only one RFC 8656 defines."""
PROTOCOL_TCP = 6
"""REQUESTED-TRANSPORT value for TCP allocations (RFC 6062)."""

_U16_RFFU = struct.Struct("!H2x")
_U32 = struct.Struct("!I")
_U8_RFFU = struct.Struct("!B3x")


@dataclass(frozen=True)
class ChannelNumber(Attribute):
    """CHANNEL-NUMBER: the channel to bind. Range checks (0x4000-0x4FFF) are the server's job."""

    TYPE = AttrType.CHANNEL_NUMBER

    number: int
    """The 16-bit channel number."""

    def __post_init__(self) -> None:
        if not 0 <= self.number <= 0xFFFF:
            raise ValueError(f"channel number {self.number:#x} does not fit in 16 bits")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return _U16_RFFU.pack(self.number)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        expect_length(value, 4)
        (number,) = _U16_RFFU.unpack(value)
        return cls(number)


@dataclass(frozen=True)
class Lifetime(Attribute):
    """LIFETIME: requested or granted allocation lifetime in seconds."""

    TYPE = AttrType.LIFETIME

    seconds: int
    """Seconds, 0 to delete an allocation."""

    def __post_init__(self) -> None:
        if not 0 <= self.seconds <= 0xFFFFFFFF:
            raise ValueError(f"lifetime {self.seconds} does not fit in 32 bits")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return _U32.pack(self.seconds)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        expect_length(value, 4)
        (seconds,) = _U32.unpack(value)
        return cls(seconds)


@dataclass(frozen=True)
class Data(Attribute):
    """DATA: application data of a Send or Data indication."""

    TYPE = AttrType.DATA

    data: bytes
    """The payload, without padding."""

    def encode_value(self, transaction_id: bytes) -> bytes:
        return self.data

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(value)


@dataclass(frozen=True)
class RequestedAddressFamily(Attribute):
    """REQUESTED-ADDRESS-FAMILY: 0x01 IPv4 or 0x02 IPv6; other values are answered with 440."""

    TYPE = AttrType.REQUESTED_ADDRESS_FAMILY

    family: int
    """The family code (see :class:`~turn_relay.stun.attributes.address.AddressFamily`)."""

    def __post_init__(self) -> None:
        if not 0 <= self.family <= 0xFF:
            raise ValueError(f"family {self.family:#x} does not fit in 8 bits")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return _U8_RFFU.pack(self.family)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        expect_length(value, 4)
        (family,) = _U8_RFFU.unpack(value)
        return cls(family)


@dataclass(frozen=True)
class EvenPort(Attribute):
    """EVEN-PORT: ask for an even relayed port, and optionally reserve the next one."""

    TYPE = AttrType.EVEN_PORT

    reserve: bool = False
    """The R bit: also reserve port + 1."""

    def encode_value(self, transaction_id: bytes) -> bytes:
        return b"\x80" if self.reserve else b"\x00"

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        expect_length(value, 1)
        return cls(bool(value[0] & 0x80))


@dataclass(frozen=True)
class RequestedTransport(Attribute):
    """REQUESTED-TRANSPORT: the relayed transport protocol; anything but UDP is answered with 442."""

    TYPE = AttrType.REQUESTED_TRANSPORT

    protocol: int = PROTOCOL_UDP
    """IANA protocol number: 17 for UDP."""

    def __post_init__(self) -> None:
        if not 0 <= self.protocol <= 0xFF:
            raise ValueError(f"protocol {self.protocol} does not fit in 8 bits")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return _U8_RFFU.pack(self.protocol)

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        expect_length(value, 4)
        (protocol,) = _U8_RFFU.unpack(value)
        return cls(protocol)


@dataclass(frozen=True)
class DontFragment(Attribute):
    """DONT-FRAGMENT: set the DF bit on packets to peers. It has no value."""

    TYPE = AttrType.DONT_FRAGMENT

    def encode_value(self, transaction_id: bytes) -> bytes:
        return b""

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        expect_length(value, 0)
        return cls()


@dataclass(frozen=True)
class ReservationToken(Attribute):
    """RESERVATION-TOKEN: names a relayed port reserved by an earlier EVEN-PORT request."""

    TYPE = AttrType.RESERVATION_TOKEN

    token: bytes
    """The 8-byte token."""

    def __post_init__(self) -> None:
        if len(self.token) != 8:
            raise ValueError(f"token is {len(self.token)} bytes, not 8")

    def encode_value(self, transaction_id: bytes) -> bytes:
        return self.token

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        expect_length(value, 8)
        return cls(value)
