"""The peer policy: nothing but the public Internet, IPv4-in-IPv6 forms judged by their IPv4 address.

Each denied address goes through every path a client or peer could use (CreatePermission,
ChannelBind, Send indication, inbound peer data) and no SendToPeer may ever come out.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from tests.turn_relay.relay_harness import (
    CLIENT_HELLO,
    Network,
    TurnClient,
    error_code,
    make_server,
)
from turn_relay.addresses import Address, canonical_host
from turn_relay.metrics import DropReason
from turn_relay.policy import PeerPolicy, embedded_ipv4
from turn_relay.stun import AddressFamily, MessageClass, RequestedAddressFamily


def teredo(server: str, client: str) -> str:
    """A Teredo address (2001::/32) for a Teredo server and an (obfuscated) client IPv4 address."""
    value = (0x20010000 << 96) | (int(IPv4Address(server)) << 64) | (0xFFFF ^ 4000) << 32
    return str(IPv6Address(value | (int(IPv4Address(client)) ^ 0xFFFFFFFF)))


DENIED_IPV4 = [
    "0.0.0.0",
    "0.1.2.3",
    "10.1.2.3",
    "100.64.0.1",
    "100.127.255.254",
    "127.0.0.1",
    "127.255.255.254",
    "169.254.169.254",
    "172.16.0.1",
    "172.31.255.255",
    "192.0.0.1",
    "192.0.2.1",
    "192.168.1.1",
    "198.18.0.1",
    "198.19.255.255",
    "198.51.100.1",
    "203.0.113.5",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
]
DENIED_IPV6 = [
    "::",
    "::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fec0::1",
    "ff02::1",
    "ff0e::1",
    "2001:db8::5",
    "100::1",
    "64:ff9b:1::a00:1",
    # IPv4 inside IPv6:
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",
    "::10.0.0.1",
    "::ffff:0:127.0.0.1",  # SIIT
    "64:ff9b::127.0.0.1",  # NAT64
    "64:ff9b::192.168.0.1",
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a00:1::",  # 6to4 of 10.0.0.1
    "2002:c0a8:101:1::1",  # 6to4 of 192.168.1.1
    teredo("94.245.121.253", "127.0.0.1"),
    teredo("10.0.0.1", "93.184.216.34"),
]
ALLOWED = [
    "93.184.216.34",
    "8.8.8.8",
    "2606:4700::1111",
    "::ffff:93.184.216.34",
    "64:ff9b::93.184.216.34",
    "2002:5db8:d822::1",
    teredo("94.245.121.253", "93.184.216.34"),
]


def v6_client(**overrides: object) -> TurnClient:
    client = TurnClient(Network(make_server(**overrides)))
    response = client.allocate(RequestedAddressFamily(AddressFamily.IPV6))
    assert response.message_class is MessageClass.SUCCESS
    return client


def client_for(host: str, **overrides: object) -> TurnClient:
    if ip_address(host).version == 6:
        return v6_client(**overrides)
    client = TurnClient(Network(make_server(**overrides)))
    assert client.allocate().message_class is MessageClass.SUCCESS
    return client


@pytest.mark.parametrize("host", DENIED_IPV4 + DENIED_IPV6)
def test_denied_peer_is_refused_on_every_path(host: str) -> None:
    client = client_for(host)
    peer: Address = (canonical_host(host), 5000)
    assert error_code(client.create_permission(peer)) == 403
    assert error_code(client.channel_bind(0x4000, peer)) == 403
    assert client.send_indication(peer, CLIENT_HELLO) == []
    assert client.channel_data(0x4000, CLIENT_HELLO) == []
    assert client.relay is not None
    assert client.network.from_peer(client.relay, peer, CLIENT_HELLO) == []
    assert client.network.to_peers == []
    drops = client.network.server.metrics.drops
    assert drops[DropReason.PEER_DENIED] == 2  # the Send indication and the inbound datagram
    assert drops[DropReason.NO_CHANNEL] == 1


@pytest.mark.parametrize("host", ALLOWED)
def test_public_peer_is_allowed(host: str) -> None:
    client = client_for(host)
    peer: Address = (canonical_host(host), 5000)
    assert client.create_permission(peer).message_class is MessageClass.SUCCESS
    client.send_indication(peer, CLIENT_HELLO)
    assert [sent.peer for sent in client.network.to_peers] == [peer]


@pytest.mark.parametrize("host", DENIED_IPV4 + DENIED_IPV6)
def test_policy_table(host: str) -> None:
    assert not PeerPolicy.build((), (), range(0)).allows(ip_address(host), 5000)


@pytest.mark.parametrize("host", ALLOWED)
def test_policy_table_allowed(host: str) -> None:
    assert PeerPolicy.build((), (), range(0)).allows(ip_address(host), 5000)


def test_port_zero_is_refused() -> None:
    client = client_for("93.184.216.34")
    assert error_code(client.create_permission(("93.184.216.34", 0))) == 403


def test_embedded_ipv4_forms() -> None:
    assert embedded_ipv4(IPv6Address("::ffff:1.2.3.4")) == (IPv4Address("1.2.3.4"),)
    assert embedded_ipv4(IPv6Address("64:ff9b::1.2.3.4")) == (IPv4Address("1.2.3.4"),)
    assert embedded_ipv4(IPv6Address("2002:102:304::5")) == (IPv4Address("1.2.3.4"),)
    server, client = embedded_ipv4(IPv6Address(teredo("5.6.7.8", "1.2.3.4")))
    assert (server, client) == (IPv4Address("5.6.7.8"), IPv4Address("1.2.3.4"))
    assert embedded_ipv4(IPv6Address("2606:4700::1111")) == ()


@pytest.mark.parametrize("host", ["127.0.0.1", "::ffff:127.0.0.1"])
def test_allow_peer_opens_a_range(host: str) -> None:
    client = client_for(host, allow_peer=("127.0.0.1/32",))
    peer: Address = (canonical_host(host), 5000)
    assert client.create_permission(peer).message_class is MessageClass.SUCCESS
    assert client.channel_bind(0x4000, peer).message_class is MessageClass.SUCCESS
    client.channel_data(0x4000, CLIENT_HELLO)
    assert [sent.peer for sent in client.network.to_peers] == [peer]
    neighbour = "127.0.0.2" if ":" not in host else "::ffff:127.0.0.2"
    assert error_code(client.create_permission((neighbour, 5000))) == 403


OWN = "93.184.216.1"


@pytest.mark.parametrize("host", [OWN, "::ffff:" + OWN])
def test_own_addresses_are_refused_except_relayed_ports(host: str) -> None:
    client = client_for(host, listen_addresses=(OWN,))
    assert error_code(client.create_permission((host, 22))) == 403
    assert error_code(client.channel_bind(0x4000, (host, 443))) == 403
    assert client.create_permission((host, 50000)).message_class is MessageClass.SUCCESS  # another allocation
    client.send_indication((host, 22), CLIENT_HELLO)  # the permission covers the IP, not port 22
    client.send_indication((host, 50001), CLIENT_HELLO)
    assert [sent.peer for sent in client.network.to_peers] == [(host, 50001)]
    assert client.relay is not None
    assert client.network.from_peer(client.relay, (host, 3478), CLIENT_HELLO) == []
    assert client.network.server.metrics.drops[DropReason.PEER_DENIED] == 2


def test_allow_peer_also_opens_own_addresses() -> None:
    client = client_for(OWN, listen_addresses=(OWN,), allow_peer=(OWN + "/32",))
    assert client.create_permission((OWN, 22)).message_class is MessageClass.SUCCESS
