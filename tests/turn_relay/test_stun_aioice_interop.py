"""Cross-check with an independent codec: aioice decodes and verifies ours, and we decode and verify its."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from turn_relay.stun import (
    ErrorCode,
    ErrorCodeAttribute,
    Lifetime,
    Message,
    MessageClass,
    Method,
    Nonce,
    Realm,
    RequestedTransport,
    Username,
    XorMappedAddress,
    XorPeerAddress,
    XorRelayedAddress,
    decode_message,
    encode_message,
    long_term_key,
    verify_fingerprint,
    verify_message_integrity,
)

stun = pytest.importorskip("aioice.stun")

TID = bytes.fromhex("0102030405060708090a0b0c")
KEY = long_term_key("1718000600:alice", "kijkmee.example", "oy6tAg0QZxbz5IR3sS1Ix+1huEg=")


def test_aioice_request_decodes_and_verifies() -> None:
    theirs = stun.Message(
        stun.Method.ALLOCATE,
        stun.Class.REQUEST,
        transaction_id=TID,
        attributes={
            "USERNAME": "1718000600:alice",
            "REALM": "kijkmee.example",
            "NONCE": b"664b2f48.AAAA",
            "REQUESTED-TRANSPORT": 0x11000000,
            "LIFETIME": 600,
            "XOR-PEER-ADDRESS": ("2001:db8::7", 50002),
        },
    )
    theirs.add_message_integrity(KEY)  # also adds FINGERPRINT
    message = decode_message(bytes(theirs))
    assert (message.method, message.message_class) == (Method.ALLOCATE, MessageClass.REQUEST)
    assert message.get(Username) == Username("1718000600:alice")
    assert message.get(Realm) == Realm("kijkmee.example")
    assert message.get(Nonce) == Nonce("664b2f48.AAAA")
    assert message.get(RequestedTransport) == RequestedTransport(17)
    assert message.get(Lifetime) == Lifetime(600)
    assert message.get(XorPeerAddress) == XorPeerAddress(IPv6Address("2001:db8::7"), 50002)
    assert verify_message_integrity(message, KEY)
    assert verify_fingerprint(message)


def test_our_responses_parse_and_verify_in_aioice() -> None:
    success = Message(
        Method.ALLOCATE,
        MessageClass.SUCCESS,
        TID,
        (
            XorRelayedAddress(IPv4Address("203.0.113.1"), 49152),
            XorMappedAddress(IPv6Address("2001:db8::5"), 61000),
            Lifetime(600),
        ),
    )
    theirs = stun.parse_message(encode_message(success, integrity_key=KEY, fingerprint=True))
    assert theirs.attributes["XOR-RELAYED-ADDRESS"] == ("203.0.113.1", 49152)
    assert theirs.attributes["XOR-MAPPED-ADDRESS"] == ("2001:db8::5", 61000)
    assert theirs.attributes["LIFETIME"] == 600
    assert theirs.check_message_integrity(KEY)

    error = Message(Method.ALLOCATE, MessageClass.ERROR, TID, (ErrorCodeAttribute(ErrorCode.STALE_NONCE),))
    theirs = stun.parse_message(encode_message(error, fingerprint=True))
    assert theirs.error_code == 438
    assert theirs.attributes["ERROR-CODE"] == (438, "")
