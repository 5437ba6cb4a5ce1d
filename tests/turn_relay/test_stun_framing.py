"""ChannelData framing, STUN/ChannelData demultiplexing and stream framing with a size cap."""

from __future__ import annotations

import random
from ipaddress import IPv4Address

import pytest

from turn_relay.stun import (
    DEFAULT_MAX_FRAME_SIZE,
    Attribute,
    ChannelData,
    Data,
    Message,
    MessageClass,
    Method,
    PacketKind,
    StreamFramer,
    StunDecodeError,
    XorPeerAddress,
    classify,
    decode_channel_data,
    decode_message,
    encode_channel_data,
    encode_message,
    is_channel_number,
    next_frame_size,
)

TID = bytes(12)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 8, 1199, 1500, 0xFFFF])
def test_channel_data_round_trip(size: int) -> None:
    message = ChannelData(0x4001, bytes(i % 251 for i in range(size)))
    datagram = encode_channel_data(message, stream=False)
    assert len(datagram) == 4 + size  # no padding needed over UDP
    assert decode_channel_data(datagram, stream=False) == message
    framed = encode_channel_data(message, stream=True)
    assert len(framed) % 4 == 0 and len(framed) - len(datagram) == -size % 4
    assert framed[len(datagram) :] == bytes(-size % 4)
    assert decode_channel_data(framed, stream=True) == message
    assert decode_channel_data(framed, stream=False) == message  # padding is allowed in datagrams too


def test_channel_data_wire_format() -> None:
    assert encode_channel_data(ChannelData(0x4FFF, b"abcde"), stream=True) == bytes.fromhex(
        "4fff0005616263646500 0000"
    )
    assert encode_channel_data(ChannelData(0x4000, b""), stream=True) == bytes.fromhex("40000000")


def test_channel_data_padding_values_are_ignored() -> None:
    assert decode_channel_data(b"\x40\x00\x00\x01a\xff\xff\xff", stream=True) == ChannelData(0x4000, b"a")


def test_channel_numbers() -> None:
    assert is_channel_number(0x4000) and is_channel_number(0x4FFF)
    assert not is_channel_number(0x3FFF) and not is_channel_number(0x5000)
    with pytest.raises(ValueError, match=r"^channel number 0x5000 is not in 0x4000..0x4FFF$"):
        ChannelData(0x5000, b"")
    with pytest.raises(ValueError, match=r"^65536 bytes of data do not fit in 16 bits$"):
        ChannelData(0x4000, bytes(0x10000))


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\x00\x01", PacketKind.STUN),
        (b"\x3f", PacketKind.STUN),
        (b"\x40", PacketKind.CHANNEL_DATA),
        (b"\x4f\xff", PacketKind.CHANNEL_DATA),
        (b"\x50", PacketKind.OTHER),  # channels 0x5000-0xFFFF are reserved
        (b"\x80", PacketKind.OTHER),  # RTP
        (b"\x16", PacketKind.STUN),  # (DTLS would need RFC 7983's finer split; none on a TURN port)
        (b"\xff", PacketKind.OTHER),
        (b"", PacketKind.OTHER),
    ],
)
def test_classify(data: bytes, kind: PacketKind) -> None:
    assert classify(data) is kind


def _stun(*attributes: Attribute) -> bytes:
    return encode_message(Message(Method.SEND, MessageClass.INDICATION, TID, attributes))


def test_next_frame_size() -> None:
    stun = _stun(Data(b"abcde"))
    assert next_frame_size(stun[:3]) is None
    assert next_frame_size(stun[:4]) == len(stun) == 20 + 12
    assert next_frame_size(b"\x40\x00\x00\x05") == 12  # 4 + 5 padded to 8
    assert next_frame_size(b"\x40\x00\x00\x00") == 4
    assert next_frame_size(bytearray(b"\x40\x00\x00\x08")) == 12


def test_frame_size_cap() -> None:
    assert DEFAULT_MAX_FRAME_SIZE == 16384
    assert next_frame_size(b"\x00\x01\x3f\xec") == 16384  # 20 + 16364: exactly the cap
    with pytest.raises(StunDecodeError) as info:
        next_frame_size(b"\x00\x01\x3f\xf0")
    assert str(info.value) == "frame of 16388 bytes exceeds the 16384-byte cap"
    with pytest.raises(StunDecodeError, match=r"^frame of 1504 bytes exceeds the 1500-byte cap$"):
        next_frame_size(b"\x40\x00\x05\xdc", max_size=1500)
    with pytest.raises(StunDecodeError, match=r"^frame of 65540 bytes exceeds the 16384-byte cap$"):
        next_frame_size(b"\x40\x00\xff\xff")


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"\x00\x01\x00\x07", "length 7 is not a multiple of 4"),
        (b"\x50\x00\x00\x00", "first byte 0x50 starts neither STUN nor ChannelData"),
        (b"POST / HTTP/1.1\r\n", "first byte 0x50 starts neither STUN nor ChannelData"),
        (b"\x16\x03\x01\x02\x00", "length 258 is not a multiple of 4"),  # TLS ClientHello on a TCP port
    ],
)
def test_unframeable_streams(data: bytes, text: str) -> None:
    with pytest.raises(StunDecodeError) as info:
        next_frame_size(data)
    assert str(info.value) == text


def _frames() -> list[bytes]:
    return [
        _stun(XorPeerAddress(IPv4Address("198.51.100.1"), 9), Data(b"hello")),
        encode_channel_data(ChannelData(0x4000, b"x"), stream=True),
        encode_channel_data(ChannelData(0x4ABC, bytes(1200)), stream=True),
        encode_channel_data(ChannelData(0x4000, b""), stream=True),
        _stun(),
    ]


def test_stream_framer_reassembles_any_chunking() -> None:
    frames = _frames()
    stream = b"".join(frames)
    rng = random.Random(5769)
    for _ in range(200):
        framer, out, pos = StreamFramer(), [], 0
        while pos < len(stream):
            step = rng.choice([1, 2, 3, 7, 64, 1500, len(stream)])
            out += framer.feed(stream[pos : pos + step])
            pos += step
            assert framer.buffered < DEFAULT_MAX_FRAME_SIZE
        assert out == frames
        assert framer.buffered == 0
    decode_message(frames[0])
    assert decode_channel_data(frames[2], stream=True).channel == 0x4ABC


def test_stream_framer_rejects_oversize_and_garbage() -> None:
    framer = StreamFramer(max_size=1024)
    assert framer.feed(b"\x40\x00") == []
    with pytest.raises(StunDecodeError, match=r"^frame of 1204 bytes exceeds the 1024-byte cap$"):
        framer.feed(b"\x04\xb0")
    with pytest.raises(StunDecodeError, match=r"^first byte 0x80 starts neither STUN nor ChannelData$"):
        StreamFramer().feed(_stun() + b"\x80\x00\x00\x00")
    with pytest.raises(ValueError, match=r"^max_size 19 is smaller than a STUN header$"):
        StreamFramer(max_size=19)
