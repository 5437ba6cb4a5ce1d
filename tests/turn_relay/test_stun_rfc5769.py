"""RFC 5769 test vectors: decode, check every attribute, verify MESSAGE-INTEGRITY and FINGERPRINT,
and re-encode bit for bit.

The vectors pad with 0x20 (2.1-2.3) or 0x00 (2.4); padding values are free per RFC 8489, and our
encoder pads with zeros unless told otherwise. The exact re-encodings below therefore pass the
vector's own padding byte, and a separate test shows what changes with zero padding.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

import pytest

from turn_relay.stun import (
    Fingerprint,
    Message,
    MessageClass,
    MessageIntegrity,
    Method,
    Nonce,
    Realm,
    Software,
    UnknownAttribute,
    Username,
    XorMappedAddress,
    decode_message,
    encode_message,
    long_term_key,
    short_term_key,
    verify_fingerprint,
    verify_message_integrity,
)


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(line.split("#")[0] for line in text.splitlines()))


SHORT_TERM_PASSWORD = "VOkJxbRl1RmTxUk/WvJxBt"
TRANSACTION_ID = bytes.fromhex("b7e7a701bc34d686fa87dfae")

# RFC 5769 section 2.1: sample request
SAMPLE_REQUEST = _hex("""
00 01 00 58  # Request type and message length
21 12 a4 42  # Magic cookie
b7 e7 a7 01  bc 34 d6 86  fa 87 df ae  # Transaction ID
80 22 00 10  # SOFTWARE attribute header
53 54 55 4e  20 74 65 73  74 20 63 6c  69 65 6e 74
00 24 00 04  # PRIORITY attribute header
6e 00 01 ff
80 29 00 08  # ICE-CONTROLLED attribute header
93 2f f9 b1  51 26 3b 36
00 06 00 09  # USERNAME attribute header
65 76 74 6a  3a 68 36 76  59 20 20 20  # "evtj:h6vY" and 3 bytes of padding
00 08 00 14  # MESSAGE-INTEGRITY attribute header
9a ea a7 0c  bf d8 cb 56  78 1e f2 b5  b2 d3 f2 49  c1 b5 71 a2
80 28 00 04  # FINGERPRINT attribute header
e5 7a 3b cf
""")

# RFC 5769 section 2.2: sample IPv4 response
IPV4_RESPONSE = _hex("""
01 01 00 3c  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
80 22 00 0b  74 65 73 74  20 76 65 63  74 6f 72 20  # SOFTWARE "test vector" and padding
00 20 00 08  00 01 a1 47  e1 12 a6 43  # XOR-MAPPED-ADDRESS
00 08 00 14  2b 91 f5 99  fd 9e 90 c3  8c 74 89 f9  2a f9 ba 53  f0 6b e7 d7
80 28 00 04  c0 7d 4c 96
""")

# RFC 5769 section 2.3: sample IPv6 response
IPV6_RESPONSE = _hex("""
01 01 00 48  21 12 a4 42  b7 e7 a7 01  bc 34 d6 86  fa 87 df ae
80 22 00 0b  74 65 73 74  20 76 65 63  74 6f 72 20
00 20 00 14  00 02 a1 47  01 13 a9 fa  a5 d3 f1 79  bc 25 f4 b5  be d2 b9 d9
00 08 00 14  a3 82 95 4e  4b e6 7b f1  17 84 c9 7c  82 92 c2 75  bf e3 ed 41
80 28 00 04  c8 fb 0b 4c
""")

# RFC 5769 section 2.4: sample request with long-term authentication
LONG_TERM_REQUEST = _hex("""
00 01 00 60  21 12 a4 42  78 ad 34 33  c6 ad 72 c0  29 da 41 2e
00 06 00 12  e3 83 9e e3  83 88 e3 83  aa e3 83 83  e3 82 af e3  82 b9 00 00  # USERNAME, 2 padding
00 15 00 1c  66 2f 2f 34  39 39 6b 39  35 34 64 36  4f 4c 33 34  6f 4c 39 46  53 54 76 79  36 34 73 41
00 14 00 0b  65 78 61 6d  70 6c 65 2e  6f 72 67 00  # REALM "example.org", 1 padding
00 08 00 14  f6 70 24 65  6d d6 4a 3e  02 b8 e0 71  2e 85 c9 a2  8c a8 96 66
""")
LONG_TERM_USERNAME = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"  # "マトリックス"
# The RFC's password is "The<U+00AD>M<U+00AA>tr<U+2168>"; SASLprep turns it into "TheMatrIX", which is
# what the key is computed from (SASLprep of "TheMatrIX" is itself).
LONG_TERM_PASSWORD = "TheMatrIX"


def _without_integrity(message: Message) -> Message:
    kept = tuple(a for a in message.attributes if not isinstance(a, MessageIntegrity | Fingerprint))
    return replace(message, attributes=kept)


def test_sample_request_decodes() -> None:
    message = decode_message(SAMPLE_REQUEST)
    assert (message.method, message.message_class) == (Method.BINDING, MessageClass.REQUEST)
    assert message.transaction_id == TRANSACTION_ID
    assert message.attributes[:4] == (
        Software("STUN test client"),
        UnknownAttribute(0x0024, bytes.fromhex("6e0001ff")),  # PRIORITY: ICE, not ours
        UnknownAttribute(0x8029, bytes.fromhex("932ff9b151263b36")),  # ICE-CONTROLLED
        Username("evtj:h6vY"),
    )
    assert message.unknown_required == (0x0024,)  # a TURN server would answer 420 to this
    assert verify_message_integrity(message, short_term_key(SHORT_TERM_PASSWORD))
    assert not verify_message_integrity(message, short_term_key("wrong"))
    assert verify_fingerprint(message)


@pytest.mark.parametrize(
    ("vector", "address"),
    [
        (IPV4_RESPONSE, IPv4Address("192.0.2.1")),
        (IPV6_RESPONSE, IPv6Address("2001:db8:1234:5678:11:2233:4455:6677")),
    ],
    ids=["ipv4", "ipv6"],
)
def test_responses_decode(vector: bytes, address: IPv4Address | IPv6Address) -> None:
    message = decode_message(vector)
    assert (message.method, message.message_class) == (Method.BINDING, MessageClass.SUCCESS)
    assert message.get(Software) == Software("test vector")
    assert message.get(XorMappedAddress) == XorMappedAddress(address, 32853)
    assert message.unknown_required == ()
    assert verify_message_integrity(message, short_term_key(SHORT_TERM_PASSWORD))
    assert verify_fingerprint(message)


def test_long_term_request_decodes() -> None:
    message = decode_message(LONG_TERM_REQUEST)
    assert message.transaction_id == bytes.fromhex("78ad3433c6ad72c029da412e")
    assert message.attributes[:3] == (
        Username(LONG_TERM_USERNAME),
        Nonce("f//499k954d6OL34oL9FSTvy64sA"),
        Realm("example.org"),
    )
    key = long_term_key(LONG_TERM_USERNAME, "example.org", LONG_TERM_PASSWORD)
    assert verify_message_integrity(message, key)
    assert not verify_message_integrity(message, long_term_key(LONG_TERM_USERNAME, "example.org", "x"))
    assert message.get(Fingerprint) is None
    assert not verify_fingerprint(message)


VECTORS = [
    (SAMPLE_REQUEST, 0x20, short_term_key(SHORT_TERM_PASSWORD), True),
    (IPV4_RESPONSE, 0x20, short_term_key(SHORT_TERM_PASSWORD), True),
    (IPV6_RESPONSE, 0x20, short_term_key(SHORT_TERM_PASSWORD), True),
    (LONG_TERM_REQUEST, 0x00, long_term_key(LONG_TERM_USERNAME, "example.org", LONG_TERM_PASSWORD), False),
]
IDS = ["2.1", "2.2", "2.3", "2.4"]


@pytest.mark.parametrize(("vector", "pad", "key", "fingerprint"), VECTORS, ids=IDS)
def test_reencode_is_bit_exact(vector: bytes, pad: int, key: bytes, fingerprint: bool) -> None:
    message = decode_message(vector)
    # Decoded integrity attributes are written back as they were ...
    assert encode_message(message, pad_byte=pad) == vector
    # ... and computing them afresh from the key gives the RFC's values too.
    fresh = encode_message(
        _without_integrity(message), integrity_key=key, fingerprint=fingerprint, pad_byte=pad
    )
    assert fresh == vector


@pytest.mark.parametrize(("vector", "pad", "key", "fingerprint"), VECTORS, ids=IDS)
def test_zero_padding_changes_only_padding_and_checksums(
    vector: bytes, pad: int, key: bytes, fingerprint: bool
) -> None:
    message = decode_message(vector)
    ours = encode_message(_without_integrity(message), integrity_key=key, fingerprint=fingerprint)
    assert len(ours) == len(vector)
    decoded = decode_message(ours)
    assert _without_integrity(decoded) == _without_integrity(message)
    assert verify_message_integrity(decoded, key)
    assert verify_fingerprint(decoded) is fingerprint
    differing = {i for i, (a, b) in enumerate(zip(ours, vector, strict=True)) if a != b}
    if pad == 0x20:
        # Only padding (space there, zero here) and therefore the HMAC and CRC values may differ;
        # these vectors end with MESSAGE-INTEGRITY (20-byte value) then FINGERPRINT (4-byte value).
        end = len(vector)
        checksums = set(range(end - 28, end - 8)) | set(range(end - 4, end))
        padding = {i for i in differing - checksums if (vector[i], ours[i]) == (0x20, 0)}
        assert padding
        assert differing & checksums
        assert differing <= padding | checksums
    else:  # 2.4 pads with zeros already
        assert differing == set()
