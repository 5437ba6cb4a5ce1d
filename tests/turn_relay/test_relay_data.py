"""Refresh, permissions, channels and the data they carry (RFC 8656 sections 7.3, 9-12)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from tests.turn_relay.relay_harness import (
    CLIENT_HELLO,
    PEER,
    PEER_V6,
    SERVER_HELLO,
    Network,
    TurnClient,
    allocated,
    error_code,
    five_tuple,
    make_server,
)
from turn_relay.actions import CloseRelay, SendToPeer
from turn_relay.addresses import Transport
from turn_relay.metrics import DropReason
from turn_relay.stun import (
    AddressFamily,
    ChannelNumber,
    Data,
    Lifetime,
    MessageClass,
    MessageIntegrity,
    Method,
    RequestedAddressFamily,
    RequestedTransport,
    UnknownAttribute,
    XorPeerAddress,
    decode_message,
    verify_message_integrity,
)

OTHER_PEER = ("93.184.216.35", 40001)


def drops(client: TurnClient, reason: DropReason) -> int:
    return client.network.server.metrics.drops[reason]


def test_refresh_extends_and_reports_the_lifetime() -> None:
    client = allocated()
    response = client.refresh(1200)
    assert response.message_class is MessageClass.SUCCESS and response.get(Lifetime) == Lifetime(1200)
    assert verify_message_integrity(response, client.key)
    assert client.refresh().get(Lifetime) == Lifetime(600)
    assert client.refresh(7200).get(Lifetime) == Lifetime(3600)


def test_refresh_with_lifetime_0_deletes_the_allocation() -> None:
    client = allocated()
    response = client.refresh(0)
    assert response.get(Lifetime) == Lifetime(0)
    network = client.network
    assert network.open_relays == {} and [type(c) for c in network.closed] == [CloseRelay]
    assert len(network.server.allocations) == 0
    assert error_code(client.refresh()) == 437
    assert network.server.metrics.allocations_deleted == 1


def test_refresh_with_another_family_is_443() -> None:
    client = allocated()
    assert error_code(client.refresh(None, RequestedAddressFamily(AddressFamily.IPV6))) == 443
    assert client.refresh(None, RequestedAddressFamily(AddressFamily.IPV4)).message_class is MessageClass.SUCCESS


@pytest.mark.parametrize("method", [Method.REFRESH, Method.CREATE_PERMISSION, Method.CHANNEL_BIND])
def test_requests_without_an_allocation_are_437(method: Method) -> None:
    client = TurnClient(Network(make_server()))
    client.challenge()
    attributes = [ChannelNumber(0x4000), XorPeerAddress(IPv4Address(PEER[0]), PEER[1])]
    response = client.transact(method, attributes if method != Method.REFRESH else [])
    assert error_code(response) == 437
    assert response.get(MessageIntegrity) is not None


@pytest.mark.parametrize("method", [Method.REFRESH, Method.CREATE_PERMISSION, Method.CHANNEL_BIND])
def test_requests_with_another_username_are_441(method: Method) -> None:
    client = allocated()
    intruder = TurnClient(client.network, client.ft, user="mallory")
    intruder.nonce = client.nonce
    attributes = [ChannelNumber(0x4000), XorPeerAddress(IPv4Address(PEER[0]), PEER[1])]
    response = intruder.transact(method, attributes if method != Method.REFRESH else [])
    assert error_code(response) == 441


def test_create_permission_then_send_indication_reaches_the_peer() -> None:
    client = allocated()
    assert client.create_permission(PEER).message_class is MessageClass.SUCCESS
    assert client.send_indication(PEER, CLIENT_HELLO) == []
    assert client.network.to_peers == [SendToPeer(client.relay, PEER, CLIENT_HELLO)]  # type: ignore[arg-type]


def test_send_indication_without_permission_is_dropped() -> None:
    client = allocated()
    client.send_indication(PEER, CLIENT_HELLO)
    assert client.network.to_peers == [] and drops(client, DropReason.NO_PERMISSION) == 1


def test_permission_covers_every_port_of_the_ip() -> None:
    client = allocated()
    client.create_permission(PEER)
    client.send_indication((PEER[0], 1234), CLIENT_HELLO)
    assert [sent.peer for sent in client.network.to_peers] == [(PEER[0], 1234)]


def test_peer_data_becomes_a_data_indication() -> None:
    client = allocated()
    client.create_permission(PEER)
    assert client.relay is not None
    sent = client.network.from_peer(client.relay, PEER, SERVER_HELLO)
    assert len(sent) == 1 and sent[0].five_tuple == client.ft
    indication = decode_message(sent[0].data)
    assert (indication.method, indication.message_class) == (Method.DATA, MessageClass.INDICATION)
    assert indication.get(XorPeerAddress) == XorPeerAddress(IPv4Address(PEER[0]), PEER[1])
    assert indication.get(Data) == Data(SERVER_HELLO)


def test_peer_data_without_permission_is_dropped() -> None:
    client = allocated()
    assert client.relay is not None
    assert client.network.from_peer(client.relay, PEER, SERVER_HELLO) == []
    assert drops(client, DropReason.NO_PERMISSION) == 1
    assert client.network.from_peer(("203.0.113.1", 1), PEER, SERVER_HELLO) == []
    assert drops(client, DropReason.NO_ALLOCATION) == 1


def test_create_permission_installs_all_or_nothing() -> None:
    client = allocated()
    response = client.create_permission(PEER, ("10.0.0.1", 5000))
    assert error_code(response) == 403
    client.send_indication(PEER, CLIENT_HELLO)
    assert client.network.to_peers == []
    assert error_code(client.transact(Method.CREATE_PERMISSION, [])) == 400


def test_peer_of_another_family_is_443() -> None:
    client = allocated()
    assert error_code(client.create_permission(PEER_V6)) == 443
    assert error_code(client.channel_bind(0x4000, PEER_V6)) == 443
    client.send_indication(PEER_V6, CLIENT_HELLO)
    assert drops(client, DropReason.PEER_FAMILY_MISMATCH) == 1


def test_ipv6_allocation_relays_to_ipv6_peers() -> None:
    client = TurnClient(Network(make_server()))
    client.allocate(RequestedAddressFamily(AddressFamily.IPV6))
    assert client.create_permission(PEER_V6).message_class is MessageClass.SUCCESS
    assert error_code(client.create_permission(PEER)) == 443
    client.send_indication(PEER_V6, CLIENT_HELLO)
    assert [sent.peer for sent in client.network.to_peers] == [PEER_V6]


def test_channel_bind_and_channel_data_both_ways() -> None:
    client = allocated()
    assert client.channel_bind(0x4000, PEER).message_class is MessageClass.SUCCESS
    assert client.channel_data(0x4000, CLIENT_HELLO) == []
    assert client.network.to_peers == [SendToPeer(client.relay, PEER, CLIENT_HELLO)]  # type: ignore[arg-type]
    assert client.relay is not None
    sent = client.network.from_peer(client.relay, PEER, SERVER_HELLO)
    assert [s.data for s in sent] == [b"\x40\x00" + len(SERVER_HELLO).to_bytes(2, "big") + SERVER_HELLO]


def test_channel_bind_installs_a_permission() -> None:
    client = allocated()
    client.channel_bind(0x4000, PEER)
    client.send_indication((PEER[0], 9), CLIENT_HELLO)
    assert [sent.peer for sent in client.network.to_peers] == [(PEER[0], 9)]


def test_channel_data_over_tcp_is_padded() -> None:
    client = allocated(ft=five_tuple(transport=Transport.TCP))
    client.channel_bind(0x4001, PEER)
    assert client.relay is not None
    sent = client.network.from_peer(client.relay, PEER, SERVER_HELLO[:13])
    assert sent[0].data == b"\x40\x01\x00\x0d" + SERVER_HELLO[:13] + b"\x00\x00\x00"


def test_padded_channel_data_from_the_client_is_accepted() -> None:
    client = allocated()
    client.channel_bind(0x4000, PEER)
    frame = b"\x40\x00\x00\x0d" + CLIENT_HELLO[:13] + b"\x00\x00\x00"
    client.network.from_client(frame, client.ft)
    assert [sent.data for sent in client.network.to_peers] == [CLIENT_HELLO[:13]]


@pytest.mark.parametrize(
    "frame", [b"\x40\x00", b"\x40\x00\x00\x10abc", b"\x40\x00\x00\x01abcdefgh"], ids=["short", "overrun", "trailing"]
)
def test_malformed_channel_data_is_dropped(frame: bytes) -> None:
    client = allocated()
    client.channel_bind(0x4000, PEER)
    assert client.network.from_client(frame, client.ft) == []
    assert client.network.to_peers == [] and drops(client, DropReason.MALFORMED) == 1


def test_channel_data_on_an_unbound_channel_is_dropped() -> None:
    client = allocated()
    client.channel_data(0x4000, CLIENT_HELLO)
    assert client.network.to_peers == [] and drops(client, DropReason.NO_CHANNEL) == 1
    stranger = TurnClient(client.network, five_tuple(("198.51.100.99", 1)))
    stranger.channel_data(0x4000, CLIENT_HELLO)
    assert drops(client, DropReason.NO_ALLOCATION) == 1


def test_channel_rebind_rules() -> None:
    client = allocated()
    assert client.channel_bind(0x4000, PEER).message_class is MessageClass.SUCCESS
    assert client.channel_bind(0x4000, PEER).message_class is MessageClass.SUCCESS  # refresh
    assert error_code(client.channel_bind(0x4000, OTHER_PEER)) == 400  # number taken by another peer
    assert error_code(client.channel_bind(0x4001, PEER)) == 400  # peer bound to another number
    assert client.channel_bind(0x4001, OTHER_PEER).message_class is MessageClass.SUCCESS


@pytest.mark.parametrize("number", [0x3FFF, 0x5000, 0xFFFF, 0])
def test_channel_number_out_of_range_is_400(number: int) -> None:
    assert error_code(allocated().channel_bind(number, PEER)) == 400


def test_channel_bind_needs_both_attributes() -> None:
    client = allocated()
    assert error_code(client.transact(Method.CHANNEL_BIND, [ChannelNumber(0x4000)])) == 400
    peer = XorPeerAddress(IPv4Address(PEER[0]), PEER[1])
    assert error_code(client.transact(Method.CHANNEL_BIND, [peer])) == 400


def test_indications_and_responses_from_clients_are_dropped_or_ignored() -> None:
    client = allocated()
    data_indication = client.encode(Method.DATA, [], auth=False, message_class=MessageClass.INDICATION)
    response = client.encode(Method.ALLOCATE, [RequestedTransport()], auth=False, message_class=MessageClass.SUCCESS)
    assert client.send_raw(data_indication) == [] and client.send_raw(response) == []
    assert drops(client, DropReason.UNEXPECTED_MESSAGE) == 2
    send_without_data = client.encode(
        Method.SEND, [XorPeerAddress(IPv4Address(PEER[0]), PEER[1])], auth=False, message_class=MessageClass.INDICATION
    )
    assert client.send_raw(send_without_data) == [] and drops(client, DropReason.MALFORMED) == 1


def test_tcp_connection_loss_ends_the_allocation() -> None:
    client = allocated(ft=five_tuple(transport=Transport.TCP))
    server = client.network.server
    actions = server.connection_lost(client.ft, client.network.now)
    assert [type(action) for action in actions] == [CloseRelay]
    assert len(server.allocations) == 0 and server.connection_lost(client.ft, client.network.now) == []


def test_peer_datagrams_too_large_for_a_data_indication_are_dropped() -> None:
    client = TurnClient(Network(make_server(allow_unencrypted=True, bandwidth_limit=None)))
    client.allocate(RequestedAddressFamily(AddressFamily.IPV6))
    client.create_permission(PEER_V6)
    assert client.relay is not None
    largest_ipv6_udp = bytes(65_527)
    assert client.network.from_peer(client.relay, PEER_V6, largest_ipv6_udp) == []
    assert drops(client, DropReason.TOO_LARGE) == 1
    sent = client.network.from_peer(client.relay, PEER_V6, bytes(65_504))
    assert decode_message(sent[0].data).get(Data) == Data(bytes(65_504))
    client.channel_bind(0x4000, PEER_V6)  # ChannelData's 16-bit length holds any UDP payload
    assert len(client.network.from_peer(client.relay, PEER_V6, largest_ipv6_udp)[0].data) == 4 + 65_527


def test_send_indication_with_unknown_required_attribute_is_dropped() -> None:
    client = allocated()
    client.create_permission(PEER)
    raw = client.encode(
        Method.SEND,
        [XorPeerAddress(IPv4Address(PEER[0]), PEER[1]), Data(CLIENT_HELLO), UnknownAttribute(0x7F00, b"")],
        auth=False,
        message_class=MessageClass.INDICATION,
    )
    assert client.send_raw(raw) == [] and client.network.to_peers == []
    assert drops(client, DropReason.MALFORMED) == 1
