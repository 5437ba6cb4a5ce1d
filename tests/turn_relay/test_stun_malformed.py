"""Malformed input: each check of the decoders fails with its own exact message, as StunDecodeError."""

from __future__ import annotations

import struct

import pytest

from turn_relay.stun import (
    MAGIC_COOKIE,
    MessageClass,
    Method,
    StunDecodeError,
    StunHeader,
    decode_channel_data,
    decode_header,
    decode_message,
)
from turn_relay.stun.message import _walk

TID = bytes(range(12))


def attr(attr_type: int, value: bytes, length: int | None = None) -> bytes:
    """One attribute with zero padding; ``length`` overrides the length field."""
    size = len(value) if length is None else length
    return struct.pack("!HH", attr_type, size) + value + bytes(-len(value) % 4)


def message(
    body: bytes, message_type: int = 0x0003, cookie: int = MAGIC_COOKIE, length: int | None = None
) -> bytes:
    size = len(body) if length is None else length
    return struct.pack("!HHI", message_type, size, cookie) + TID + body


def decode_error(data: bytes) -> StunDecodeError:
    with pytest.raises(StunDecodeError) as info:
        decode_message(data)
    return info.value


def test_errors_are_value_errors() -> None:
    assert issubclass(StunDecodeError, ValueError)


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"", "message of 0 bytes is shorter than the 20-byte header"),
        (message(b"")[:19], "message of 19 bytes is shorter than the 20-byte header"),
        (message(b"", message_type=0x4001), "first two bits are 01, not 00"),
        (message(b"", message_type=0xC001), "first two bits are 11, not 00"),
        (message(b"", cookie=0x2112A443), "bad magic cookie 0x2112a443"),
        (message(b"", cookie=0), "bad magic cookie 0x00000000"),
    ],
)
def test_header_without_usable_fields(data: bytes, text: str) -> None:
    error = decode_error(data)
    assert str(error) == text
    assert error.header is None


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (message(bytes(8), length=7), "length 7 is not a multiple of 4"),
        (message(bytes(4), length=8), "length 8 does not match the 4 bytes after the header"),
        (message(bytes(12), length=8), "length 8 does not match the 12 bytes after the header"),
        (
            message(attr(0x0006, b"abcd", length=12)),
            "USERNAME length 12 overruns the message (4 bytes left at offset 24)",
        ),
        (
            message(attr(0x7777, b"", length=1)),
            "attribute 0x7777 length 1 overruns the message (0 bytes left at offset 24)",
        ),
    ],
)
def test_framing_errors_keep_the_header(data: bytes, text: str) -> None:
    error = decode_error(data)
    assert str(error) == text
    # The header was readable, so a server can still answer 400 to this transaction.
    assert error.header == StunHeader(
        Method.ALLOCATE, MessageClass.REQUEST, struct.unpack("!H", data[2:4])[0], TID
    )


def test_walk_reports_truncated_header_and_missing_padding() -> None:
    # decode_message's length checks make these unreachable through it; _walk still guards itself.
    header = StunHeader(Method.BINDING, MessageClass.REQUEST, 2, TID)
    with pytest.raises(StunDecodeError, match=r"^attribute header truncated at offset 20$"):
        list(_walk(message(b"\x00\x06"), header))
    header = StunHeader(Method.BINDING, MessageClass.REQUEST, 5, TID)
    with pytest.raises(StunDecodeError, match=r"^USERNAME padding missing at offset 25$"):
        list(_walk(message(b"\x00\x06\x00\x01x"), header))


XOR_V4 = 0x0020
ADDRESS_CASES = [
    (attr(XOR_V4, b"\x00\x03\x00\x01" + bytes(4)), "XOR-MAPPED-ADDRESS: bad address family 0x03"),
    (attr(XOR_V4, b"\x00\x00\x00\x01" + bytes(4)), "XOR-MAPPED-ADDRESS: bad address family 0x00"),
    (attr(0x0012, b"\x00\x01\x00\x01" + bytes(16)), "XOR-PEER-ADDRESS: length 20, expected 8 for IPV4"),
    (attr(0x0016, b"\x00\x02\x00\x01" + bytes(4)), "XOR-RELAYED-ADDRESS: length 8, expected 20 for IPV6"),
    (attr(0x0001, b"\x00\x01"), "MAPPED-ADDRESS: length 2 is too short for an address"),
]
TEXT_CASES = [
    (attr(0x0006, b"\xff"), "USERNAME: invalid UTF-8 at byte 0"),
    (attr(0x0015, b"ok\xc3"), "NONCE: invalid UTF-8 at byte 2"),
    (attr(0x0006, b"u" * 514), "USERNAME: 514 bytes, at most 513 allowed"),
    (attr(0x0014, b"r" * 128), "REALM: 128 characters, at most 127 allowed"),
    (attr(0x8022, "\u20ac".encode() * 128), "SOFTWARE: 128 characters, at most 127 allowed"),
]
ERROR_CASES = [
    (attr(0x0009, b"\x00\x00"), "ERROR-CODE: length 2 is shorter than 4"),
    (attr(0x0009, b"\x00\x00\x07\x00"), "ERROR-CODE: error class 7 is not in 3..6"),
    (attr(0x0009, b"\x00\x00\x02\x00"), "ERROR-CODE: error class 2 is not in 3..6"),
    (attr(0x0009, b"\x00\x00\x04\x64"), "ERROR-CODE: error number 100 is not in 0..99"),
    (attr(0x0009, b"\x00\x00\x04\x01\xfe"), "ERROR-CODE: invalid UTF-8 at byte 0"),
    (attr(0x000A, b"\x00\x01\x00"), "UNKNOWN-ATTRIBUTES: length 3 is not a multiple of 2"),
]
FIXED_SIZE_CASES = [
    (attr(0x0008, bytes(16)), "MESSAGE-INTEGRITY: length 16, expected 20"),
    (attr(0x001C, bytes(12)), "MESSAGE-INTEGRITY-SHA256: length 12 is not a multiple of 4 in 16..32"),
    (attr(0x001C, bytes(18)), "MESSAGE-INTEGRITY-SHA256: length 18 is not a multiple of 4 in 16..32"),
    (attr(0x001C, bytes(36)), "MESSAGE-INTEGRITY-SHA256: length 36 is not a multiple of 4 in 16..32"),
    (attr(0x8028, bytes(8)), "FINGERPRINT: length 8, expected 4"),
    (attr(0x000C, bytes(2)), "CHANNEL-NUMBER: length 2, expected 4"),
    (attr(0x000D, bytes(8)), "LIFETIME: length 8, expected 4"),
    (attr(0x0017, bytes(1)), "REQUESTED-ADDRESS-FAMILY: length 1, expected 4"),
    (attr(0x0018, bytes(4)), "EVEN-PORT: length 4, expected 1"),
    (attr(0x0019, bytes(0)), "REQUESTED-TRANSPORT: length 0, expected 4"),
    (attr(0x001A, bytes(4)), "DONT-FRAGMENT: length 4, expected 0"),
    (attr(0x0022, bytes(4)), "RESERVATION-TOKEN: length 4, expected 8"),
]


@pytest.mark.parametrize(
    ("body", "text"),
    ADDRESS_CASES + TEXT_CASES + ERROR_CASES + FIXED_SIZE_CASES,
)
def test_malformed_attribute_values(body: bytes, text: str) -> None:
    error = decode_error(message(body))
    assert str(error) == text
    assert error.header is not None and error.header.transaction_id == TID


def test_attribute_after_fingerprint() -> None:
    body = attr(0x8028, bytes(4)) + attr(0x0006, b"late")
    assert str(decode_error(message(body))) == "USERNAME follows FINGERPRINT"


def test_decode_header_alone_does_not_need_the_body() -> None:
    header = decode_header(message(bytes(8))[:20])
    assert header.length == 8
    with pytest.raises(StunDecodeError, match=r"^length 6 is not a multiple of 4$"):
        decode_header(message(b"", length=6))


@pytest.mark.parametrize(
    ("data", "stream", "text"),
    [
        (b"\x40\x00\x00", False, "ChannelData of 3 bytes is shorter than the 4-byte header"),
        (b"\x50\x00\x00\x00", False, "channel number 0x5000 is not in 0x4000..0x4FFF"),
        (b"\x3f\xff\x00\x00", False, "channel number 0x3fff is not in 0x4000..0x4FFF"),
        (b"\x40\x00\x00\x05abcd", False, "ChannelData length 5 overruns the 4 bytes after the header"),
        (b"\x40\x00\x00\x05abcde", True, "ChannelData length 5 leaves 0 trailing bytes, exactly 3 allowed"),
        (
            b"\x40\x00\x00\x05abcde\0\0\0\0",
            True,
            "ChannelData length 5 leaves 4 trailing bytes, exactly 3 allowed",
        ),
        (b"\x40\x00\x00\x04abcd\0", False, "ChannelData length 4 leaves 1 trailing bytes, at most 0 allowed"),
        (
            b"\x40\x00\x00\x01a\0\0\0\0",
            False,
            "ChannelData length 1 leaves 4 trailing bytes, at most 3 allowed",
        ),
    ],
)
def test_malformed_channel_data(data: bytes, stream: bool, text: str) -> None:
    with pytest.raises(StunDecodeError) as info:
        decode_channel_data(data, stream=stream)
    assert str(info.value) == text
