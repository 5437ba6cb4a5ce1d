"""Typed STUN/TURN attributes and the registry the message codec dispatches on."""

from __future__ import annotations

from turn_relay.stun.attributes.address import (
    AddressFamily,
    IPAddress,
    MappedAddress,
    XorMappedAddress,
    XorPeerAddress,
    XorRelayedAddress,
)
from turn_relay.stun.attributes.base import (
    Attribute,
    AttrType,
    UnknownAttribute,
    attr_name,
    is_comprehension_required,
)
from turn_relay.stun.attributes.error_code import ErrorCode, ErrorCodeAttribute, UnknownAttributes
from turn_relay.stun.attributes.integrity import Fingerprint, MessageIntegrity, MessageIntegritySha256
from turn_relay.stun.attributes.text import Nonce, Realm, Software, Username
from turn_relay.stun.attributes.turn import (
    PROTOCOL_TCP,
    PROTOCOL_UDP,
    ChannelNumber,
    Data,
    DontFragment,
    EvenPort,
    Lifetime,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
)

ATTRIBUTE_CLASSES: dict[int, type[Attribute]] = {
    cls.TYPE: cls
    for cls in (
        MappedAddress,
        XorMappedAddress,
        XorPeerAddress,
        XorRelayedAddress,
        Username,
        Realm,
        Nonce,
        Software,
        ErrorCodeAttribute,
        UnknownAttributes,
        MessageIntegrity,
        MessageIntegritySha256,
        Fingerprint,
        ChannelNumber,
        Lifetime,
        Data,
        RequestedAddressFamily,
        EvenPort,
        RequestedTransport,
        DontFragment,
        ReservationToken,
    )
}
"""Type code -> attribute class; any other type decodes to :class:`UnknownAttribute`."""

__all__ = [
    "ATTRIBUTE_CLASSES",
    "PROTOCOL_TCP",
    "PROTOCOL_UDP",
    "AddressFamily",
    "AttrType",
    "Attribute",
    "ChannelNumber",
    "Data",
    "DontFragment",
    "ErrorCode",
    "ErrorCodeAttribute",
    "EvenPort",
    "Fingerprint",
    "IPAddress",
    "Lifetime",
    "MappedAddress",
    "MessageIntegrity",
    "MessageIntegritySha256",
    "Nonce",
    "Realm",
    "RequestedAddressFamily",
    "RequestedTransport",
    "ReservationToken",
    "Software",
    "UnknownAttribute",
    "UnknownAttributes",
    "Username",
    "XorMappedAddress",
    "XorPeerAddress",
    "XorRelayedAddress",
    "attr_name",
    "is_comprehension_required",
]
