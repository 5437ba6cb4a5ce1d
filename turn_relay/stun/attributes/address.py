"""Address attributes: MAPPED-ADDRESS and the XOR-ed ones (RFC 8489 14.1-14.2, RFC 8656 18.3, 18.5)."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import ClassVar, Self

from turn_relay.stun.attributes.base import Attribute, AttrType
from turn_relay.stun.errors import StunDecodeError
from turn_relay.stun.header import MAGIC_COOKIE

IPAddress = IPv4Address | IPv6Address

_COOKIE_BYTES = struct.pack("!I", MAGIC_COOKIE)
_FAMILY_PORT = struct.Struct("!xBH")


class AddressFamily(enum.IntEnum):
    """Address family codes used by address attributes and REQUESTED-ADDRESS-FAMILY."""

    IPV4 = 0x01
    IPV6 = 0x02


_ADDRESS_SIZE = {AddressFamily.IPV4: 4, AddressFamily.IPV6: 16}
_FAMILIES = {family.value: family for family in AddressFamily}


def _xor(data: bytes, mask: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, mask, strict=True))


@dataclass(frozen=True)
class _AddressAttribute(Attribute):
    address: IPAddress
    """The IP address, in clear (the codec applies the XOR)."""
    port: int
    """The port, in clear."""

    XOR: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"port {self.port} is not in 0..65535")

    @property
    def family(self) -> AddressFamily:
        """The address family of :attr:`address`."""
        return AddressFamily.IPV4 if self.address.version == 4 else AddressFamily.IPV6

    def encode_value(self, transaction_id: bytes) -> bytes:
        port, packed = self.port, self.address.packed
        if self.XOR:
            port ^= MAGIC_COOKIE >> 16
            packed = _xor(packed, (_COOKIE_BYTES + transaction_id)[: len(packed)])
        return _FAMILY_PORT.pack(self.family, port) + packed

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        if len(value) < 4:
            raise StunDecodeError(f"length {len(value)} is too short for an address")
        family_code, port = _FAMILY_PORT.unpack_from(value)
        family = _FAMILIES.get(family_code)
        if family is None:
            raise StunDecodeError(f"bad address family {family_code:#04x}")
        packed = value[4:]
        expected = 4 + _ADDRESS_SIZE[family]
        if len(value) != expected:
            raise StunDecodeError(f"length {len(value)}, expected {expected} for {family.name}")
        if cls.XOR:
            port ^= MAGIC_COOKIE >> 16
            packed = _xor(packed, (_COOKIE_BYTES + transaction_id)[: len(packed)])
        address: IPAddress = IPv4Address(packed) if family is AddressFamily.IPV4 else IPv6Address(packed)
        return cls(address, port)


@dataclass(frozen=True)
class MappedAddress(_AddressAttribute):
    """MAPPED-ADDRESS: the client's reflexive address, not XOR-ed (RFC 3489 compatibility)."""

    TYPE = AttrType.MAPPED_ADDRESS
    XOR = False


@dataclass(frozen=True)
class XorMappedAddress(_AddressAttribute):
    """XOR-MAPPED-ADDRESS: the client's reflexive transport address."""

    TYPE = AttrType.XOR_MAPPED_ADDRESS


@dataclass(frozen=True)
class XorPeerAddress(_AddressAttribute):
    """XOR-PEER-ADDRESS: a peer's address, as the relay's peers see it."""

    TYPE = AttrType.XOR_PEER_ADDRESS


@dataclass(frozen=True)
class XorRelayedAddress(_AddressAttribute):
    """XOR-RELAYED-ADDRESS: the relayed transport address the server allocated."""

    TYPE = AttrType.XOR_RELAYED_ADDRESS
