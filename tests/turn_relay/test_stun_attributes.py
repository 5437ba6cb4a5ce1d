"""Every attribute type round-trips, known wire encodings, message types, and integrity ordering."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from turn_relay.stun import (
    ATTRIBUTE_CLASSES,
    PROTOCOL_UDP,
    AddressFamily,
    Attribute,
    AttrType,
    ChannelNumber,
    Data,
    DontFragment,
    ErrorCode,
    ErrorCodeAttribute,
    EvenPort,
    Fingerprint,
    Lifetime,
    MappedAddress,
    Message,
    MessageClass,
    MessageIntegrity,
    MessageIntegritySha256,
    Method,
    Nonce,
    Realm,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
    Software,
    UnknownAttribute,
    UnknownAttributes,
    Username,
    XorMappedAddress,
    XorPeerAddress,
    XorRelayedAddress,
    attr_name,
    compute_message_integrity_sha256,
    decode_message,
    encode_message,
    long_term_key,
    pack_message_type,
    unpack_message_type,
    verify_fingerprint,
    verify_message_integrity,
    verify_message_integrity_sha256,
)

TID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
V4 = IPv4Address("192.0.2.1")
V6 = IPv6Address("2001:db8:1234:5678:11:2233:4455:6677")

SAMPLES: list[Attribute] = [
    MappedAddress(V4, 3478),
    MappedAddress(V6, 65535),
    XorMappedAddress(V4, 32853),
    XorMappedAddress(V6, 32853),
    XorPeerAddress(V4, 0),
    XorPeerAddress(V6, 49152),
    XorRelayedAddress(IPv4Address("203.0.113.7"), 50000),
    XorRelayedAddress(V6, 50001),
    Username("1718000000:alice"),
    Username("u" * 513),
    Realm("kijkmee.example"),
    Nonce("64a0b1c2.abcdefghijklmnopqrstuv"),
    Software("kijkmee \u00e9\u20ac"),
    ErrorCodeAttribute(ErrorCode.STALE_NONCE),
    ErrorCodeAttribute(ErrorCode.UNKNOWN_ATTRIBUTE, "Unknown Attribute"),
    ErrorCodeAttribute(699, "x" * 127),
    UnknownAttributes((0x0024,)),
    UnknownAttributes((0x0024, 0x7FFF, 0x0003)),
    UnknownAttributes(()),
    MessageIntegrity(bytes(range(20))),
    MessageIntegritySha256(bytes(range(32))),
    MessageIntegritySha256(bytes(range(16))),
    Fingerprint(0xE57A3BCF),
    ChannelNumber(0x4000),
    ChannelNumber(0x4FFF),
    Lifetime(600),
    Lifetime(0xFFFFFFFF),
    Data(b""),
    Data(b"\x00\x01\x02"),
    Data(bytes(1500)),
    RequestedAddressFamily(AddressFamily.IPV6),
    RequestedAddressFamily(0x03),
    EvenPort(reserve=True),
    EvenPort(reserve=False),
    RequestedTransport(PROTOCOL_UDP),
    RequestedTransport(6),
    DontFragment(),
    ReservationToken(b"12345678"),
    UnknownAttribute(0x0024, b"\x6e\x00\x01\xff"),
    UnknownAttribute(0x8029, b"odd"),
]


def test_samples_cover_every_registered_type() -> None:
    assert {type(sample).TYPE for sample in SAMPLES if not isinstance(sample, UnknownAttribute)} == set(
        ATTRIBUTE_CLASSES
    )


@pytest.mark.parametrize("attribute", SAMPLES, ids=lambda a: f"{attr_name(a.type_code())}")
def test_round_trip(attribute: Attribute) -> None:
    if not isinstance(attribute, UnknownAttribute):  # raw ones have no value codec of their own
        assert type(attribute).decode_value(attribute.encode_value(TID), TID) == attribute
    message = Message(Method.ALLOCATE, MessageClass.REQUEST, TID, (attribute,))
    data = encode_message(message)
    assert len(data) % 4 == 0
    decoded = decode_message(data)
    assert decoded == message
    assert decoded.raw == data
    assert encode_message(decoded) == data


@pytest.mark.parametrize(
    ("attribute", "wire"),
    [
        (Lifetime(600), "000d0004 00000258"),
        (RequestedTransport(), "00190004 11000000"),
        (EvenPort(reserve=True), "00180001 80000000"),
        (DontFragment(), "001a0000"),
        (ChannelNumber(0x4001), "000c0004 40010000"),
        (RequestedAddressFamily(AddressFamily.IPV4), "00170004 01000000"),
        (ErrorCodeAttribute(ErrorCode.STALE_NONCE), "00090004 00000426"),  # empty reason by default
        (
            ErrorCodeAttribute.with_phrase(ErrorCode.BAD_REQUEST),
            "0009000f 00000400 42616420 52657175 65737400",
        ),
        (UnknownAttributes((0x0024, 0x8029, 0x0003)), "000a0006 00248029 00030000"),
        (XorMappedAddress(V4, 32853), "00200008 0001a147 e112a643"),  # RFC 5769 2.2
        (MappedAddress(V4, 32853), "00010008 00018055 c0000201"),
        (XorPeerAddress(V6, 32853), "00120014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9"),  # key as 2.3
        (Username("abcde"), "00060005 61626364 65000000"),
    ],
)
def test_known_wire_encodings(attribute: Attribute, wire: str) -> None:
    data = encode_message(Message(Method.ALLOCATE, MessageClass.REQUEST, TID, (attribute,)))
    assert data[20:] == bytes.fromhex(wire.replace(" ", ""))


def test_error_code_phrases_and_codes() -> None:
    assert ErrorCode.STALE_NONCE.phrase == "Stale Nonce"
    assert ErrorCode.UNSUPPORTED_TRANSPORT_PROTOCOL.phrase == "Unsupported Transport Protocol"
    assert all(code.phrase for code in ErrorCode)
    decoded = ErrorCodeAttribute.decode_value(bytes.fromhex("00000426"), TID)
    assert decoded.code is ErrorCode.STALE_NONCE and decoded.reason == ""
    odd = ErrorCodeAttribute.decode_value(bytes.fromhex("fffffe63") + b"why", TID)  # reserved bits ignored
    assert (odd.code, odd.reason) == (699, "why")
    assert type(odd.code) is int


# RFC 8489 section 5 / RFC 8656 section 17 message type values.
KNOWN_TYPES = {
    (Method.BINDING, MessageClass.REQUEST): 0x0001,
    (Method.BINDING, MessageClass.INDICATION): 0x0011,
    (Method.BINDING, MessageClass.SUCCESS): 0x0101,
    (Method.BINDING, MessageClass.ERROR): 0x0111,
    (Method.ALLOCATE, MessageClass.REQUEST): 0x0003,
    (Method.ALLOCATE, MessageClass.SUCCESS): 0x0103,
    (Method.ALLOCATE, MessageClass.ERROR): 0x0113,
    (Method.REFRESH, MessageClass.REQUEST): 0x0004,
    (Method.REFRESH, MessageClass.SUCCESS): 0x0104,
    (Method.SEND, MessageClass.INDICATION): 0x0016,
    (Method.DATA, MessageClass.INDICATION): 0x0017,
    (Method.CREATE_PERMISSION, MessageClass.REQUEST): 0x0008,
    (Method.CREATE_PERMISSION, MessageClass.ERROR): 0x0118,
    (Method.CHANNEL_BIND, MessageClass.REQUEST): 0x0009,
    (Method.CHANNEL_BIND, MessageClass.SUCCESS): 0x0109,
}


@pytest.mark.parametrize(("method_class", "message_type"), KNOWN_TYPES.items())
def test_known_message_types(method_class: tuple[Method, MessageClass], message_type: int) -> None:
    assert pack_message_type(*method_class) == message_type
    assert unpack_message_type(message_type) == method_class


def test_every_method_and_class_round_trips() -> None:
    for method in range(0x1000):
        for message_class in MessageClass:
            decoded_method, decoded_class = unpack_message_type(pack_message_type(method, message_class))
            assert (decoded_method, decoded_class) == (method, message_class)
    assert type(unpack_message_type(0x000A)[0]) is int  # unknown methods stay plain numbers
    with pytest.raises(ValueError, match="method 0x1000 does not fit in 12 bits"):
        pack_message_type(0x1000, MessageClass.REQUEST)


def test_message_accessors() -> None:
    peers = (XorPeerAddress(V4, 1), XorPeerAddress(V6, 2))
    message = Message(
        Method.CREATE_PERMISSION,
        MessageClass.REQUEST,
        TID,
        (*peers, UnknownAttribute(0x8030, b"optional"), UnknownAttribute(0x0030, b"required"), Username("u")),
    )
    decoded = decode_message(encode_message(message))
    assert decoded.get(XorPeerAddress) == peers[0]
    assert decoded.get_all(XorPeerAddress) == list(peers)
    assert decoded.get(Realm) is None
    assert decoded.unknown_required == (0x0030,)  # 0x8030 is comprehension-optional: kept, not reported
    assert decoded.get(Username) == Username("u")


def test_address_helpers() -> None:
    assert XorPeerAddress(ip_address("::1"), 5).family is AddressFamily.IPV6
    assert XorPeerAddress(ip_address("127.0.0.1"), 5).family is AddressFamily.IPV4


KEY = long_term_key("1718000000:alice", "kijkmee.example", "secret")
KEY_SHA256 = bytes(range(32))


def _request(*attributes: Attribute) -> Message:
    return Message(Method.ALLOCATE, MessageClass.REQUEST, TID, attributes)


def test_integrity_sha1_sha256_and_fingerprint_in_order() -> None:
    data = encode_message(
        _request(Username("1718000000:alice")),
        integrity_key=KEY,
        integrity_sha256_key=KEY_SHA256,
        fingerprint=True,
    )
    decoded = decode_message(data)
    types = [a.type_code() for a in decoded.attributes]
    assert types == [
        AttrType.USERNAME,
        AttrType.MESSAGE_INTEGRITY,
        AttrType.MESSAGE_INTEGRITY_SHA256,
        AttrType.FINGERPRINT,
    ]
    assert verify_message_integrity(decoded, KEY)
    assert verify_message_integrity_sha256(decoded, KEY_SHA256)
    assert verify_fingerprint(decoded)
    assert not verify_message_integrity(decoded, bytes(16))
    assert not verify_message_integrity_sha256(decoded, bytes(32))


def test_tampering_breaks_integrity_and_fingerprint() -> None:
    data = bytearray(
        encode_message(_request(Username("1718000000:alice")), integrity_key=KEY, fingerprint=True)
    )
    data[25] ^= 0x01  # inside USERNAME
    tampered = decode_message(bytes(data))
    assert not verify_message_integrity(tampered, KEY)
    assert not verify_fingerprint(tampered)


def test_attributes_after_integrity_are_ignored() -> None:
    signed = decode_message(encode_message(_request(Username("1718000000:alice")), integrity_key=KEY))
    late = (Realm("late"), UnknownAttribute(0x0030, b"unknown but ignored"))
    data = encode_message(
        replace(signed, attributes=signed.attributes + late),
        integrity_sha256_key=KEY_SHA256,
        fingerprint=True,
    )
    decoded = decode_message(data)
    assert [type(a) for a in decoded.attributes] == [
        Username,
        MessageIntegrity,
        MessageIntegritySha256,
        Fingerprint,
    ]
    assert decoded.unknown_required == ()
    # MESSAGE-INTEGRITY covers only what precedes it, so it still verifies.
    assert verify_message_integrity(decoded, KEY)
    assert verify_message_integrity_sha256(decoded, KEY_SHA256)
    assert verify_fingerprint(decoded)


def test_attributes_after_sha256_integrity_are_ignored_even_sha1() -> None:
    signed = decode_message(encode_message(_request(Username("u")), integrity_sha256_key=KEY_SHA256))
    data = encode_message(replace(signed, attributes=(*signed.attributes, Realm("late"))), integrity_key=KEY)
    decoded = decode_message(data)
    assert [type(a) for a in decoded.attributes] == [Username, MessageIntegritySha256]
    assert verify_message_integrity_sha256(decoded, KEY_SHA256)
    assert not verify_message_integrity(decoded, KEY)  # the MESSAGE-INTEGRITY after it does not count


@pytest.mark.parametrize("size", [16, 20, 24, 28, 32])
def test_truncated_sha256_integrity(size: int) -> None:
    prefix = encode_message(_request(Username("u")))
    digest = compute_message_integrity_sha256(prefix, KEY_SHA256, size)
    decoded = decode_message(encode_message(_request(Username("u"), MessageIntegritySha256(digest))))
    assert verify_message_integrity_sha256(decoded, KEY_SHA256)
    assert not verify_message_integrity_sha256(decoded, KEY)


def test_verifying_needs_a_decoded_message() -> None:
    built = _request(MessageIntegrity(bytes(20)))
    with pytest.raises(ValueError, match="not decoded"):
        verify_message_integrity(built, KEY)
    assert not verify_message_integrity(_request(), KEY)
    assert not verify_fingerprint(_request())


def test_pad_byte_fills_padding() -> None:
    data = encode_message(_request(Username("abcde")), pad_byte=0x20)
    assert data[-3:] == b"   "
    assert decode_message(data).get(Username) == Username("abcde")


@pytest.mark.parametrize(
    ("build", "text"),
    [
        (lambda: XorPeerAddress(V4, 65536), "port 65536 is not in 0..65535"),
        (lambda: ErrorCodeAttribute(299), "error code 299 is not in 300..699"),
        (lambda: ErrorCodeAttribute(400, "r" * 128), "128 characters, at most 127 allowed"),
        (lambda: Username("\u00e9" * 257), "514 bytes, at most 513 allowed"),
        (lambda: MessageIntegrity(bytes(19)), "HMAC-SHA1 is 19 bytes, not 20"),
        (lambda: MessageIntegritySha256(bytes(15)), "length 15 is not a multiple of 4 in 16..32"),
        (lambda: Fingerprint(1 << 32), "fingerprint 0x100000000 does not fit in 32 bits"),
        (lambda: ChannelNumber(0x10000), "channel number 0x10000 does not fit in 16 bits"),
        (lambda: Lifetime(-1), "lifetime -1 does not fit in 32 bits"),
        (lambda: RequestedAddressFamily(256), "family 0x100 does not fit in 8 bits"),
        (lambda: RequestedTransport(256), "protocol 256 does not fit in 8 bits"),
        (lambda: ReservationToken(b"short"), "token is 5 bytes, not 8"),
        (lambda: UnknownAttributes((0x10000,)), "attribute type 0x10000 does not fit in 16 bits"),
        (lambda: UnknownAttribute(-1, b""), "attribute type -0x1 does not fit in 16 bits"),
        (
            lambda: Message(Method.BINDING, MessageClass.REQUEST, bytes(11)),
            "transaction id is 11 bytes, not 12",
        ),
        (lambda: Message(0x1000, MessageClass.REQUEST, TID), "method 0x1000 does not fit in 12 bits"),
        (
            lambda: encode_message(_request(Data(bytes(0x10000)))),
            "DATA value of 65536 bytes does not fit in 16 bits",
        ),
    ],
)
def test_building_invalid_values_is_a_programming_error(build: object, text: str) -> None:
    assert callable(build)
    with pytest.raises(ValueError) as info:
        build()
    assert str(info.value) == text
