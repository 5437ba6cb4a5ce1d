"""Quotas, the bandwidth cap, the unauthenticated rate limit, fail2ban and bounded memory."""

from __future__ import annotations

from tests.turn_relay.relay_harness import (
    CLIENT_HELLO,
    NOW,
    PEER,
    SECRET,
    SERVER_HELLO,
    Network,
    TurnClient,
    allocated,
    error_code,
    five_tuple,
    make_server,
)
from turn_relay.auth import mint_turn_credentials
from turn_relay.metrics import DropReason
from turn_relay.stun import MessageClass, Method, RequestedTransport


def client_at(network: Network, host: str, **options: object) -> TurnClient:
    return TurnClient(network, five_tuple((host, 50000)), **options)  # type: ignore[arg-type]


def test_allocations_per_username_are_capped_with_486() -> None:
    network = Network(make_server(max_allocations_per_user=2))
    credentials = mint_turn_credentials(SECRET, "alice", NOW, 600)
    clients = [client_at(network, f"198.51.100.{n}", credentials=credentials) for n in (1, 2, 3)]
    assert [c.allocate().message_class for c in clients[:2]] == [MessageClass.SUCCESS] * 2
    assert error_code(clients[2].allocate()) == 486
    assert client_at(network, "198.51.100.4", user="bob").allocate().message_class is MessageClass.SUCCESS
    clients[0].refresh(0)
    assert clients[2].allocate().message_class is MessageClass.SUCCESS


def test_allocations_in_total_are_capped_with_508() -> None:
    network = Network(make_server(max_allocations=2))
    clients = [client_at(network, f"198.51.100.{n}", user=f"user{n}") for n in (1, 2, 3)]
    assert [error_code(c.allocate()) for c in clients] == [None, None, 508]


def test_no_free_relayed_port_is_508() -> None:
    network = Network(make_server(min_port=50000, max_port=50001))
    clients = [client_at(network, f"198.51.100.{n}", user=f"user{n}") for n in (1, 2, 3)]
    assert [error_code(c.allocate()) for c in clients] == [None, None, 508]
    assert sorted(port for _, port in network.open_relays.values()) == [50000, 50001]


def test_permissions_per_allocation_are_capped_with_508() -> None:
    client = allocated(Network(make_server(max_permissions_per_allocation=2)))
    assert client.create_permission(PEER, ("93.184.216.35", 1)).message_class is MessageClass.SUCCESS
    assert error_code(client.create_permission(("93.184.216.36", 1))) == 508
    assert error_code(client.channel_bind(0x4000, ("93.184.216.36", 1))) == 508
    assert client.create_permission(PEER).message_class is MessageClass.SUCCESS  # a refresh needs no room
    assert client.channel_bind(0x4000, PEER).message_class is MessageClass.SUCCESS


def test_channels_per_allocation_are_capped_with_508() -> None:
    client = allocated(Network(make_server(max_channels_per_allocation=1)))
    assert client.channel_bind(0x4000, PEER).message_class is MessageClass.SUCCESS
    assert error_code(client.channel_bind(0x4001, ("93.184.216.35", 1))) == 508
    assert client.channel_bind(0x4000, PEER).message_class is MessageClass.SUCCESS


def test_bandwidth_cap_drops_the_excess_in_both_directions() -> None:
    client = allocated(Network(make_server(bandwidth_limit=2000)))
    client.channel_bind(0x4000, PEER)
    big = CLIENT_HELLO + bytes(900)
    client.channel_data(0x4000, big)
    assert client.relay is not None
    assert len(client.network.from_peer(client.relay, PEER, SERVER_HELLO + bytes(900))) == 1
    client.channel_data(0x4000, big)  # the second second's worth: over the cap
    assert len(client.network.to_peers) == 1
    assert client.network.server.metrics.drops[DropReason.BANDWIDTH] == 1
    client.network.now += 0.5  # 1000 bytes refilled
    client.send_indication(PEER, big)
    assert len(client.network.to_peers) == 2


def test_unauthenticated_requests_are_rate_limited_per_source() -> None:
    network = Network(make_server(unauthenticated_rate=1, unauthenticated_burst=3))
    client = client_at(network, "198.51.100.1")
    answers = [
        len(client.send_raw(client.encode(Method.ALLOCATE, [RequestedTransport()], auth=False))) for _ in range(5)
    ]
    assert answers == [1, 1, 1, 0, 0]
    assert network.server.metrics.drops[DropReason.RATE_LIMITED] == 2
    assert client.send_raw(client.encode(Method.BINDING, auth=False)) == []  # Binding shares the budget
    other = client_at(network, "198.51.100.2")
    assert other.transact(Method.BINDING, auth=False).message_class is MessageClass.SUCCESS
    network.now += 1
    assert client.transact(Method.BINDING, auth=False).message_class is MessageClass.SUCCESS


def test_authenticated_requests_are_not_rate_limited() -> None:
    network = Network(make_server(unauthenticated_rate=1, unauthenticated_burst=1))
    client = allocated(network)  # its one unauthenticated request was the 401 round trip
    for _ in range(10):
        assert client.refresh().message_class is MessageClass.SUCCESS


def test_global_budget_caps_answers_from_many_sources() -> None:
    network = Network(make_server(unauthenticated_global_rate=5))
    binding = TurnClient(network).encode(Method.BINDING, auth=False)
    answered = sum(len(client_at(network, f"198.51.100.{n}").send_raw(binding)) for n in range(50))
    assert answered == 5
    assert network.server.metrics.drops[DropReason.RATE_LIMITED] == 45


def test_repeated_auth_failures_block_the_source() -> None:
    network = Network(make_server(auth_failure_limit=3, auth_block_time=600))
    username, _ = mint_turn_credentials(SECRET, "alice", NOW, 3600)
    attacker = client_at(network, "198.51.100.66", credentials=(username, "guess"))
    assert [error_code(attacker.allocate()) for _ in range(2)] == [401, 401]
    assert attacker.send_raw(attacker.encode(Method.ALLOCATE, [RequestedTransport()])) == []  # third: blocked
    server = network.server
    assert server.metrics.sources_blocked == 1 and server.metrics.auth_failures == 3
    honest_same_ip = TurnClient(network, five_tuple(("198.51.100.66", 50001)))
    assert honest_same_ip.send_raw(honest_same_ip.encode(Method.BINDING, auth=False)) == []
    assert server.metrics.drops[DropReason.BLOCKED_SOURCE] >= 2
    assert client_at(network, "198.51.100.67").allocate().message_class is MessageClass.SUCCESS
    network.advance(601)
    assert honest_same_ip.allocate().message_class is MessageClass.SUCCESS


def test_failures_with_a_nonce_the_source_never_received_do_not_count() -> None:
    """A spoofed source cannot get a victim blocked: it never sees the nonce sent to the victim."""
    network = Network(make_server(auth_failure_limit=2))
    victim = client_at(network, "198.51.100.5")
    victim.challenge()
    username, _ = mint_turn_credentials(SECRET, "alice", NOW, 3600)
    spoofer = client_at(network, "198.51.100.5", credentials=(username, "guess"))
    spoofer.nonce = "6666c2f0.AAAAAAAAAAAAAAAAAAAAAA"
    for _ in range(5):
        assert error_code(spoofer.allocate()) == 401
    assert network.server.metrics.auth_failures == 0
    assert victim.allocate().message_class is MessageClass.SUCCESS


def test_a_flood_of_spoofed_sources_keeps_memory_bounded() -> None:
    server = make_server(max_tracked_sources=10_000)
    network = Network(server)
    request = TurnClient(network).encode(Method.ALLOCATE, [RequestedTransport()], auth=False)
    answered = 0
    for n in range(100_000):
        network.now = NOW + n / 10_000  # 100,000 requests in 10 seconds
        ft = five_tuple((f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}", 1024 + n % 60_000))
        answered += len(server.handle_client_data(request, ft, network.now))
    assert len(server.unauthenticated.sources) <= 10_000
    assert len(server.auth_failures.failures) == 0 and len(server.auth_failures.blocked) == 0
    assert len(server.allocations) == 0
    assert answered <= 2000 * 11  # the global budget: 2000 a second plus one burst
    assert answered + server.metrics.drops[DropReason.RATE_LIMITED] == 100_000
    network.advance(60)  # idle sources are forgotten: no IP address is kept for nothing
    assert len(server.unauthenticated.sources) == 0 and server.next_timer() is None
