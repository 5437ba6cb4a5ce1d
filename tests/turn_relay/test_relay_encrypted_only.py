"""Encrypted media only: RFC 7983 classes, and RTP only after DTLS handshakes both ways."""

from __future__ import annotations

import pytest

from tests.turn_relay.relay_harness import (
    CLIENT_HELLO,
    DTLS_APP,
    PEER,
    PLAIN,
    SERVER_HELLO,
    SRTP,
    STUN_CHECK,
    Network,
    TurnClient,
    allocated,
    make_server,
)
from turn_relay.allocation import MAX_MEDIA_PATHS
from turn_relay.classify import PAYLOAD_CLASS, PayloadClass, is_dtls_handshake
from turn_relay.metrics import DropReason

OTHER_PEER = ("93.184.216.35", 40001)


def bound(**overrides: object) -> TurnClient:
    client = allocated(Network(make_server(**overrides)))
    client.channel_bind(0x4000, PEER)
    client.channel_bind(0x4001, OTHER_PEER)
    return client


def peer_sends(client: TurnClient, data: bytes, peer: tuple[str, int] = PEER) -> list[bytes]:
    assert client.relay is not None
    return [sent.data[4:] for sent in client.network.from_peer(client.relay, peer, data)]


def drops(client: TurnClient, reason: DropReason) -> int:
    return client.network.server.metrics.drops[reason]


@pytest.mark.parametrize(
    ("first", "kind"),
    [
        (0, PayloadClass.STUN),
        (3, PayloadClass.STUN),
        (4, PayloadClass.OTHER),
        (16, PayloadClass.OTHER),  # ZRTP is not relayed
        (19, PayloadClass.OTHER),
        (20, PayloadClass.DTLS),
        (63, PayloadClass.DTLS),
        (64, PayloadClass.OTHER),  # TURN channels inside a relayed payload
        (127, PayloadClass.OTHER),
        (128, PayloadClass.RTP),
        (191, PayloadClass.RTP),
        (192, PayloadClass.OTHER),
        (255, PayloadClass.OTHER),
    ],
)
def test_rfc7983_classes(first: int, kind: PayloadClass) -> None:
    assert PAYLOAD_CLASS[first] is kind


def test_handshake_detection_needs_a_dtls_record_header() -> None:
    assert is_dtls_handshake(CLIENT_HELLO)
    assert not is_dtls_handshake(bytes([22, 0x03, 0x03]) + bytes(20))  # TLS, not DTLS
    assert not is_dtls_handshake(bytes([22, 0xFE]))  # shorter than a record header
    assert not is_dtls_handshake(DTLS_APP)


@pytest.mark.parametrize("payload", [PLAIN, b"\x04abc", b"\xc0rtp-ish", bytes([16]) + b"zrtp", b""])
def test_unencrypted_payload_is_dropped_both_ways(payload: bytes) -> None:
    client = bound()
    client.channel_data(0x4000, payload)
    assert peer_sends(client, payload) == []
    assert client.network.to_peers == [] and drops(client, DropReason.NOT_RFC7983) == 2


def test_rtp_before_dtls_is_dropped() -> None:
    client = bound()
    client.channel_data(0x4000, SRTP)
    assert peer_sends(client, SRTP) == []
    assert client.network.to_peers == [] and drops(client, DropReason.RTP_BEFORE_DTLS) == 2


def test_rtp_passes_only_after_dtls_handshakes_in_both_directions() -> None:
    client = bound()
    client.channel_data(0x4000, CLIENT_HELLO)
    client.channel_data(0x4000, SRTP)  # only one direction so far
    assert drops(client, DropReason.RTP_BEFORE_DTLS) == 1
    assert peer_sends(client, SERVER_HELLO) == [SERVER_HELLO]
    client.channel_data(0x4000, SRTP)
    assert peer_sends(client, SRTP) == [SRTP]
    assert [sent.data for sent in client.network.to_peers] == [CLIENT_HELLO, SRTP]


def test_dtls_state_is_per_peer() -> None:
    client = bound()
    client.channel_data(0x4000, CLIENT_HELLO)
    peer_sends(client, SERVER_HELLO)
    client.channel_data(0x4001, SRTP)
    assert peer_sends(client, SRTP, OTHER_PEER) == []
    assert drops(client, DropReason.RTP_BEFORE_DTLS) == 2


def test_stun_and_dtls_records_always_pass() -> None:
    client = bound()
    for payload in (STUN_CHECK, DTLS_APP):
        client.channel_data(0x4000, payload)
        assert peer_sends(client, payload) == [payload]
    assert [sent.data for sent in client.network.to_peers] == [STUN_CHECK, DTLS_APP]


def test_gate_state_is_shared_by_indications_and_channels() -> None:
    client = allocated()
    client.create_permission(PEER)
    client.send_indication(PEER, CLIENT_HELLO)
    assert client.relay is not None
    assert len(client.network.from_peer(client.relay, PEER, SERVER_HELLO)) == 1  # a Data indication
    client.channel_bind(0x4000, PEER)
    client.channel_data(0x4000, SRTP)
    assert [sent.data for sent in client.network.to_peers] == [CLIENT_HELLO, SRTP]


def test_rtp_in_indications_before_dtls_is_dropped() -> None:
    client = allocated()
    client.create_permission(PEER)
    client.send_indication(PEER, SRTP)
    client.send_indication(PEER, PLAIN)
    assert client.relay is not None
    assert client.network.from_peer(client.relay, PEER, SRTP) == []
    assert client.network.to_peers == []
    assert drops(client, DropReason.RTP_BEFORE_DTLS) == 2 and drops(client, DropReason.NOT_RFC7983) == 1


def test_allow_unencrypted_relays_everything() -> None:
    client = bound(allow_unencrypted=True)
    for payload in (PLAIN, SRTP, b"\xff"):
        client.channel_data(0x4000, payload)
        assert peer_sends(client, payload) == [payload]
    assert [sent.data for sent in client.network.to_peers] == [PLAIN, SRTP, b"\xff"]
    assert client.network.server.metrics.dropped == 0


def test_gate_state_per_allocation_is_capped() -> None:
    client = allocated()
    client.create_permission(PEER)
    assert client.relay is not None
    for port in range(1000, 1000 + MAX_MEDIA_PATHS + 10):
        assert len(client.network.from_peer(client.relay, (PEER[0], port), SERVER_HELLO)) == 1  # still relayed
    allocation = client.network.server.allocations.by_id[1]
    assert len(allocation.paths) == MAX_MEDIA_PATHS
    assert client.network.server.metrics.media_paths_refused == 10
