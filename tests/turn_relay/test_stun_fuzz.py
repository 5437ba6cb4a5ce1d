"""The one-exit rule (h11's fuzz rule): every decoder either succeeds or raises StunDecodeError.

A seeded ``random.Random`` loop feeds FUZZ_INPUTS = 100,000 inputs -- random bytes and stacked
mutations (bit flips, truncations, extensions, header and attribute length edits, attribute type
swaps, attribute splicing) of valid messages of every method and class -- to decode_message
(which runs decode_header), decode_channel_data (datagram and stream) and StreamFramer (which
runs next_frame_size).
Messages that decode are also verified and re-encoded. A hypothesis test adds shrinking search.
It runs in a few seconds; the seed makes any failure reproducible.
"""

from __future__ import annotations

import random
import struct
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

from hypothesis import given, settings
from hypothesis import strategies as st

from turn_relay.stun import (
    ATTRIBUTE_CLASSES,
    AddressFamily,
    Attribute,
    ChannelData,
    ChannelNumber,
    Data,
    DontFragment,
    ErrorCode,
    ErrorCodeAttribute,
    EvenPort,
    Lifetime,
    MappedAddress,
    Message,
    MessageClass,
    Method,
    Nonce,
    Realm,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
    Software,
    StreamFramer,
    StunDecodeError,
    UnknownAttribute,
    UnknownAttributes,
    Username,
    XorMappedAddress,
    XorPeerAddress,
    XorRelayedAddress,
    decode_channel_data,
    decode_message,
    encode_channel_data,
    encode_message,
    verify_fingerprint,
    verify_message_integrity,
    verify_message_integrity_sha256,
)

FUZZ_INPUTS = 100_000
SEED = 0x2112A442
KEY = bytes(range(16))
KEY_SHA256 = bytes(range(32))

POOL: list[Attribute] = [
    MappedAddress(IPv4Address("192.0.2.1"), 3478),
    XorMappedAddress(IPv6Address("2001:db8::1"), 32853),
    XorPeerAddress(IPv4Address("198.51.100.7"), 50000),
    XorPeerAddress(IPv6Address("2001:db8::7"), 50002),
    XorRelayedAddress(IPv4Address("203.0.113.1"), 49152),
    Username("1718000000:alice"),
    Realm("kijkmee.example"),
    Nonce("64a0b1c2.abcdefghijklmnopqrstuv"),
    Software("kijkmee \u20ac"),
    ErrorCodeAttribute(ErrorCode.UNKNOWN_ATTRIBUTE, "Unknown Attribute"),
    UnknownAttributes((0x0024, 0x0030, 0x7FFF)),
    ChannelNumber(0x4001),
    Lifetime(600),
    Data(b"\x80\x00payload"),
    RequestedAddressFamily(AddressFamily.IPV6),
    EvenPort(reserve=True),
    RequestedTransport(),
    DontFragment(),
    ReservationToken(b"tok12345"),
    UnknownAttribute(0x0024, b"\x6e\x00\x01\xff"),
    UnknownAttribute(0x8029, b"\x93\x2f\xf9\xb1\x51"),
]


def _seeds(rng: random.Random) -> list[bytes]:
    """Valid messages: every method x class, random attribute mixes, with and without checksums."""
    seeds = []
    for method in (*Method, 0x00A, 0xFFF):
        for message_class in MessageClass:
            for _ in range(4):
                attributes = tuple(rng.sample(POOL, rng.randint(0, 8)))
                tid = rng.randbytes(12)
                message = Message(method, message_class, tid, attributes)
                seeds.append(
                    encode_message(
                        message,
                        integrity_key=KEY if rng.random() < 0.6 else None,
                        integrity_sha256_key=KEY_SHA256 if rng.random() < 0.3 else None,
                        fingerprint=rng.random() < 0.6,
                        pad_byte=rng.choice([0, 0x20, 0xFF]),
                    )
                )
    for size in (0, 1, 3, 4, 100):
        seeds.append(encode_channel_data(ChannelData(0x4000 + size, rng.randbytes(size)), stream=True))
    return seeds


def _attribute_offsets(data: bytes) -> list[int]:
    """Offsets of attribute headers, following length fields as far as they stay inside ``data``."""
    offsets, offset = [], 20
    while offset + 4 <= len(data):
        offsets.append(offset)
        (length,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + length + (-length % 4)
    return offsets


def _flip_bits(rng: random.Random, data: bytearray, seeds: list[bytes]) -> None:
    for _ in range(rng.randint(1, 8)):
        if data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)


def _truncate(rng: random.Random, data: bytearray, seeds: list[bytes]) -> None:
    del data[rng.randint(0, len(data)) :]


def _extend(rng: random.Random, data: bytearray, seeds: list[bytes]) -> None:
    data += rng.randbytes(rng.choice([1, 2, 3, 4, 8, 20]))


def _edit_header_length(rng: random.Random, data: bytearray, seeds: list[bytes]) -> None:
    if len(data) >= 4:
        length = rng.choice([rng.randrange(0x10000), len(data) - 20 + rng.choice([-8, -4, -1, 1, 4, 8])])
        data[2:4] = struct.pack("!H", length % 0x10000)


def _edit_attribute_length(rng: random.Random, data: bytearray, seeds: list[bytes]) -> None:
    if offsets := _attribute_offsets(bytes(data)):
        offset = rng.choice(offsets)
        (length,) = struct.unpack_from("!H", data, offset + 2)
        new = rng.choice([rng.randrange(0x10000), length + rng.choice([-4, -3, -1, 1, 2, 4, 16]), 0])
        data[offset + 2 : offset + 4] = struct.pack("!H", new % 0x10000)


def _swap_attribute_type(rng: random.Random, data: bytearray, seeds: list[bytes]) -> None:
    """Give a value to another decoder: reaches the typed decoders with wrong-sized values."""
    if offsets := _attribute_offsets(bytes(data)):
        new_type = rng.choice([*ATTRIBUTE_CLASSES, rng.randrange(0x10000)])
        offset = rng.choice(offsets)
        data[offset : offset + 2] = struct.pack("!H", new_type)


def _splice(rng: random.Random, data: bytearray, seeds: list[bytes]) -> None:
    """Move an attribute of another message in at an attribute boundary, fixing the length or not."""
    donor = rng.choice(seeds)
    donor_offsets = _attribute_offsets(donor)
    if not donor_offsets:
        return
    start = rng.choice(donor_offsets)
    (length,) = struct.unpack_from("!H", donor, start + 2)
    chunk = donor[start : start + 4 + length + (-length % 4)]
    at = rng.choice([*_attribute_offsets(bytes(data)), len(data)])
    data[at:at] = chunk
    if len(data) >= 20 and rng.random() < 0.8:
        data[2:4] = struct.pack("!H", (len(data) - 20) % 0x10000)


def _random_bytes(rng: random.Random, data: bytearray, seeds: list[bytes]) -> None:
    data[:] = rng.randbytes(rng.randint(0, 64))
    if rng.random() < 0.5 and len(data) >= 20:  # a plausible header so the attribute walk runs
        data[0] &= 0x3F
        data[2:8] = struct.pack("!HI", (len(data) - 20) & ~3, 0x2112A442)


MUTATIONS: list[Callable[[random.Random, bytearray, list[bytes]], None]] = [
    _flip_bits,
    _truncate,
    _extend,
    _edit_header_length,
    _edit_attribute_length,
    _swap_attribute_type,
    _splice,
    _random_bytes,
]


def _exercise(data: bytes) -> str:
    """Run every decoder over ``data``; return "ok" or the decode_message error's text."""
    for stream in (False, True):
        try:
            decode_channel_data(data, stream=stream)
        except StunDecodeError:
            pass
    try:
        StreamFramer().feed(data)  # runs next_frame_size
    except StunDecodeError:
        pass
    try:
        message = decode_message(data)  # runs decode_header
    except StunDecodeError as exc:
        return str(exc)
    verify_message_integrity(message, KEY)
    verify_message_integrity_sha256(message, KEY_SHA256)
    verify_fingerprint(message)
    assert isinstance(message.unknown_required, tuple)
    assert decode_message(encode_message(message)) == message  # what decodes, re-encodes
    return "ok"


def test_one_exit_over_many_inputs() -> None:
    rng = random.Random(SEED)
    seeds = _seeds(rng)
    outcomes: Counter[str] = Counter()
    attribute_errors: set[str] = set()
    for count in range(FUZZ_INPUTS):
        data = bytearray(rng.choice(seeds))
        for mutate in rng.choices(MUTATIONS, k=rng.choice([0, 1, 1, 1, 2, 3])):
            mutate(rng, data, seeds)
        try:
            outcome = _exercise(bytes(data))
        except Exception as exc:  # anything but StunDecodeError breaks the rule: report a repro
            raise AssertionError(f"input #{count} {bytes(data).hex()} raised {exc!r}") from exc
        outcomes["ok" if outcome == "ok" else "rejected"] += 1
        if ":" in outcome:  # "<ATTRIBUTE-NAME>: <why>" comes from a typed attribute decoder
            attribute_errors.add(outcome.split(":")[0])
    assert outcomes["ok"] + outcomes["rejected"] == FUZZ_INPUTS
    # The mutations must reach deep: many inputs decode, and most typed decoders reject some value.
    assert outcomes["ok"] > FUZZ_INPUTS // 10, outcomes
    assert outcomes["rejected"] > FUZZ_INPUTS // 2, outcomes
    assert len(attribute_errors) >= 15, attribute_errors


@settings(max_examples=600, deadline=None, derandomize=True, database=None)
@given(st.binary(max_size=128))
def test_one_exit_hypothesis_random_bytes(data: bytes) -> None:
    _exercise(data)


@settings(max_examples=600, deadline=None, derandomize=True, database=None)
@given(
    st.integers(0, 2**32),
    st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 255)), max_size=6),
    st.integers(0, 200),
)
def test_one_exit_hypothesis_patched_messages(seed: int, patches: list[tuple[int, int]], cut: int) -> None:
    rng = random.Random(seed)
    data = bytearray(rng.choice(_HYPOTHESIS_SEEDS))
    for position, value in patches:
        if data:
            data[position % len(data)] = value
    if cut % 3 == 0:
        del data[max(0, len(data) - cut) :]
    _exercise(bytes(data))


_HYPOTHESIS_SEEDS = _seeds(random.Random(SEED + 1))
