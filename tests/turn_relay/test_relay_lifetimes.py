"""Lifetimes of allocations (600 s, at most 3600 s), permissions (300 s) and channels (600 s), with a fake clock."""

from __future__ import annotations

from tests.turn_relay.relay_harness import (
    CLIENT_HELLO,
    NOW,
    PEER,
    SERVER_HELLO,
    Network,
    TurnClient,
    allocated,
    error_code,
    make_server,
)
from turn_relay.actions import CloseRelay
from turn_relay.metrics import DropReason
from turn_relay.stun import Lifetime, MessageClass, Method, RequestedTransport

OTHER_PEER = ("93.184.216.35", 40001)


def drops(client: TurnClient, reason: DropReason) -> int:
    return client.network.server.metrics.drops[reason]


def test_allocation_expires_after_its_lifetime() -> None:
    client = allocated()
    network, server = client.network, client.network.server
    assert server.allocations.next_deadline() == NOW + 600
    network.advance(599)
    assert len(server.allocations) == 1 and network.closed == []
    network.advance(2)
    assert len(server.allocations) == 0
    assert network.closed == [CloseRelay(1, client.relay)]  # type: ignore[arg-type]
    assert server.metrics.allocations_expired == 1
    assert client.relay is not None and network.from_peer(client.relay, PEER, SERVER_HELLO) == []
    assert drops(client, DropReason.NO_ALLOCATION) == 1
    assert error_code(client.refresh()) == 437


def test_refresh_extends_the_allocation() -> None:
    client = allocated()
    client.network.advance(500)
    client.refresh(3600)
    client.network.advance(3599)
    assert len(client.network.server.allocations) == 1
    client.network.advance(2)
    assert len(client.network.server.allocations) == 0


def test_refresh_cannot_exceed_the_maximum() -> None:
    client = allocated()
    assert client.refresh(86_400).get(Lifetime) == Lifetime(3600)
    client.network.advance(3601)
    assert len(client.network.server.allocations) == 0


def test_permission_lapses_after_300_seconds_unless_refreshed() -> None:
    client = allocated()
    client.create_permission(PEER)
    client.network.advance(250)
    client.create_permission(PEER)  # refresh
    client.network.advance(299)
    client.send_indication(PEER, CLIENT_HELLO)
    assert len(client.network.to_peers) == 1
    client.network.advance(2)
    client.send_indication(PEER, CLIENT_HELLO)
    assert len(client.network.to_peers) == 1 and drops(client, DropReason.NO_PERMISSION) == 1
    assert client.network.server.allocations.by_id[1].permissions == {}  # swept by the timer


def test_channel_needs_its_permission_and_regains_it() -> None:
    client = allocated()
    client.channel_bind(0x4000, PEER)
    client.network.advance(301)  # the permission has lapsed, the channel has not
    client.channel_data(0x4000, CLIENT_HELLO)
    assert client.network.to_peers == [] and drops(client, DropReason.NO_PERMISSION) == 1
    client.create_permission(PEER)
    client.channel_data(0x4000, CLIENT_HELLO)
    assert len(client.network.to_peers) == 1


def test_channel_lapses_after_600_seconds_unless_refreshed() -> None:
    client = allocated()
    client.refresh(3600)
    client.channel_bind(0x4000, PEER)
    client.network.advance(290)
    client.channel_bind(0x4000, PEER)  # refreshes the channel (to 890) and its permission (to 590)
    client.network.advance(290)
    client.create_permission(PEER)  # the permission to 880, as clients refresh them on their own
    client.network.advance(289)
    client.channel_data(0x4000, CLIENT_HELLO)
    assert len(client.network.to_peers) == 1
    client.network.advance(22)
    client.channel_data(0x4000, CLIENT_HELLO)
    assert len(client.network.to_peers) == 1 and drops(client, DropReason.NO_CHANNEL) == 1
    # The number and the peer are free again.
    assert client.channel_bind(0x4000, OTHER_PEER).message_class is MessageClass.SUCCESS
    assert client.channel_bind(0x4001, PEER).message_class is MessageClass.SUCCESS


def test_peer_data_after_channel_lapse_falls_back_to_data_indications() -> None:
    client = allocated()
    client.refresh(3600)
    client.channel_bind(0x4000, PEER)
    client.network.advance(601)
    client.create_permission(PEER)
    assert client.relay is not None
    sent = client.network.from_peer(client.relay, PEER, SERVER_HELLO)
    assert len(sent) == 1 and sent[0].data[0] < 0x40  # a STUN Data indication, not ChannelData


def test_timer_is_idle_once_everything_has_expired() -> None:
    client = allocated()
    client.create_permission(PEER)
    server = client.network.server
    assert server.allocations.next_deadline() == NOW + 300
    client.network.advance(10_000)
    assert len(server.allocations) == 0
    assert server.next_timer() is None  # sources were swept too


def test_an_allocation_never_opened_expires() -> None:
    server = make_server()
    network = Network(server)
    client = TurnClient(network)
    client.challenge()
    actions = server.handle_client_data(client.encode(Method.ALLOCATE, [RequestedTransport()]), client.ft, NOW)
    assert len(actions) == 1 and len(server.allocations) == 1
    assert error_code(client.refresh()) == 437  # not usable before its port opens
    network.advance(601)
    assert len(server.allocations) == 0 and len(network.closed) == 1
    assert server.relay_opened(actions[0].allocation_id, network.now) == []  # type: ignore[union-attr]
