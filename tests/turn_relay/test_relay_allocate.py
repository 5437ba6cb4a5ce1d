"""Allocate and long-term authentication with TURN REST credentials (RFC 8656 7.2, RFC 8489 9.2)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from tests.turn_relay.relay_harness import (
    CLIENT,
    NOW,
    OLD_SECRET,
    REALM,
    RELAY_V4,
    RELAY_V6,
    SECRET,
    Network,
    TurnClient,
    allocated,
    error_code,
    five_tuple,
    make_server,
)
from turn_relay.auth import mint_turn_credentials
from turn_relay.metrics import DropReason
from turn_relay.stun import (
    PROTOCOL_TCP,
    AddressFamily,
    AttrType,
    DontFragment,
    ErrorCodeAttribute,
    EvenPort,
    Fingerprint,
    Lifetime,
    Message,
    MessageClass,
    MessageIntegrity,
    Method,
    Nonce,
    Realm,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
    Software,
    UnknownAttribute,
    UnknownAttributes,
    Username,
    XorMappedAddress,
    XorRelayedAddress,
    encode_message,
    verify_fingerprint,
    verify_message_integrity,
)


def test_allocate_answers_401_then_allocates() -> None:
    client = TurnClient(Network(make_server()))
    challenge = client.challenge()
    assert challenge.message_class is MessageClass.ERROR
    assert challenge.get(Realm) == Realm(REALM)
    assert challenge.get(Nonce) is not None
    assert challenge.get(MessageIntegrity) is None  # no key to sign with yet
    assert challenge.get(ErrorCodeAttribute) == ErrorCodeAttribute(401, "")  # no reason phrase

    response = client.allocate()
    assert response.message_class is MessageClass.SUCCESS
    relayed = response.get(XorRelayedAddress)
    assert relayed is not None and relayed.address == IPv4Address(RELAY_V4)
    assert 49152 <= relayed.port <= 65535
    assert response.get(XorMappedAddress) == XorMappedAddress(IPv4Address(CLIENT[0]), CLIENT[1])
    assert response.get(Lifetime) == Lifetime(600)
    assert verify_message_integrity(response, client.key)
    assert response.get(Software) is None and response.get(Fingerprint) is None
    assert client.network.open_relays == {1: (RELAY_V4, relayed.port)}


def test_fingerprint_is_echoed_and_software_only_when_configured() -> None:
    client = TurnClient(Network(make_server(software="kijkmee-relay")))
    client.challenge()
    response = client.transact(Method.ALLOCATE, [RequestedTransport()], fingerprint=True)
    assert response.message_class is MessageClass.SUCCESS
    assert verify_fingerprint(response) and verify_message_integrity(response, client.key)
    assert response.get(Software) == Software("kijkmee-relay")


def test_stale_nonce_gets_438_with_a_fresh_nonce() -> None:
    client = TurnClient(Network(make_server(nonce_lifetime=60)))
    client.challenge()
    client.network.now += 61
    response = client.transact(Method.ALLOCATE, [RequestedTransport()], retry_stale=False)
    assert error_code(response) == 438
    fresh = response.get(Nonce)
    assert fresh is not None and fresh.text != client.nonce
    assert response.get(Realm) == Realm(REALM) and response.get(MessageIntegrity) is None
    client.nonce = fresh.text
    assert client.allocate().message_class is MessageClass.SUCCESS


def test_nonce_issued_to_another_client_gets_401() -> None:
    network = Network(make_server())
    alice = TurnClient(network)
    alice.challenge()
    mallory = TurnClient(network, five_tuple(("198.51.100.8", 50000)))
    mallory.nonce = alice.nonce
    assert error_code(mallory.allocate()) == 401
    assert network.server.metrics.auth_failures == 0  # the source proved nothing: not counted


def test_wrong_password_gets_401_and_counts_a_failure() -> None:
    network = Network(make_server())
    username, _ = mint_turn_credentials(SECRET, "alice", NOW, 600)
    client = TurnClient(network, credentials=(username, "not-the-password"))
    response = client.allocate()
    assert error_code(response) == 401
    assert response.get(MessageIntegrity) is None
    assert network.server.metrics.auth_failures == 1
    assert network.open_relays == {}


def test_expired_username_is_refused_after_the_clock_skew() -> None:
    network = Network(make_server(credential_clock_skew=30))
    username, password = mint_turn_credentials(SECRET, "alice", NOW - 600, 600)  # expires at NOW
    client = TurnClient(network, credentials=(username, password))
    network.now = NOW + 29
    assert client.allocate().message_class is MessageClass.SUCCESS
    late = TurnClient(network, five_tuple(("198.51.100.9", 50000)), credentials=(username, password))
    network.now = NOW + 31
    assert error_code(late.allocate()) == 401


def test_malformed_username_is_refused() -> None:
    client = TurnClient(Network(make_server()), credentials=("alice", "whatever"))
    assert error_code(client.allocate()) == 401


@pytest.mark.parametrize("secret", [SECRET, OLD_SECRET])
def test_every_configured_secret_is_accepted(secret: bytes) -> None:
    client = TurnClient(Network(make_server(secrets=(SECRET, OLD_SECRET))), secret=secret)
    assert client.allocate().message_class is MessageClass.SUCCESS


def test_a_retired_secret_is_refused() -> None:
    client = TurnClient(Network(make_server(secrets=(SECRET,))), secret=OLD_SECRET)
    assert error_code(client.allocate()) == 401


def test_integrity_without_username_is_400() -> None:
    client = TurnClient(Network(make_server()))
    client.challenge()
    message = Message(Method.ALLOCATE, MessageClass.REQUEST, client.new_tid(), (RequestedTransport(),))
    response = client.send_raw(encode_message(message, integrity_key=client.key))
    assert [error_code(r) for r in response] == [400]


def test_retransmitted_allocate_gets_the_same_response() -> None:
    client = TurnClient(Network(make_server()))
    client.challenge()
    request = client.encode(Method.ALLOCATE, [RequestedTransport()])
    first = client.network.from_client(request, client.ft)
    again = client.network.from_client(request, client.ft)
    assert len(first) == 1 and [sent.data for sent in again] == [first[0].data]
    assert len(client.network.open_relays) == 1


def test_allocate_on_an_allocated_5_tuple_is_437() -> None:
    client = allocated()
    response = client.allocate()
    assert error_code(response) == 437
    assert verify_message_integrity(response, client.key)  # errors after authentication are signed


def test_allocate_with_another_username_on_the_5_tuple_is_441() -> None:
    client = allocated()
    other = TurnClient(client.network, client.ft, user="bob")
    other.nonce = client.nonce
    assert error_code(other.allocate()) == 441


def test_requested_transport_is_required_and_must_be_udp() -> None:
    client = TurnClient(Network(make_server()))
    assert error_code(client.allocate(transport=False)) == 400
    response = client.transact(Method.ALLOCATE, [RequestedTransport(PROTOCOL_TCP)])
    assert error_code(response) == 442


def test_unknown_comprehension_required_attribute_is_420() -> None:
    client = TurnClient(Network(make_server()))
    client.challenge()
    response = client.transact(Method.ALLOCATE, [RequestedTransport(), UnknownAttribute(0x7F01, b"x")])
    assert error_code(response) == 420
    assert response.get(UnknownAttributes) == UnknownAttributes((0x7F01,))
    assert verify_message_integrity(response, client.key)


def test_unknown_comprehension_optional_attribute_is_ignored() -> None:
    client = TurnClient(Network(make_server()))
    assert client.allocate(UnknownAttribute(0x8123, b"x")).message_class is MessageClass.SUCCESS


def test_dont_fragment_is_420_unless_the_io_layer_supports_it() -> None:
    client = TurnClient(Network(make_server()))
    response = client.allocate(DontFragment())
    assert error_code(response) == 420
    assert response.get(UnknownAttributes) == UnknownAttributes((AttrType.DONT_FRAGMENT,))

    server = make_server(dont_fragment=True)
    client = TurnClient(Network(server))
    client.challenge()
    actions = server.handle_client_data(
        client.encode(Method.ALLOCATE, [RequestedTransport(), DontFragment()]), client.ft, NOW
    )
    assert [action.dont_fragment for action in actions] == [True]  # type: ignore[union-attr]


def test_requested_address_family() -> None:
    client = TurnClient(Network(make_server()))
    response = client.allocate(RequestedAddressFamily(AddressFamily.IPV6))
    relayed = response.get(XorRelayedAddress)
    assert relayed is not None and relayed.address == IPv6Address(RELAY_V6)

    other = TurnClient(client.network, five_tuple(("198.51.100.8", 1)))
    assert error_code(other.allocate(RequestedAddressFamily(0x03))) == 440
    v4_only = TurnClient(Network(make_server(relay_addresses=(RELAY_V4,))))
    assert error_code(v4_only.allocate(RequestedAddressFamily(AddressFamily.IPV6))) == 440


def test_reservations_are_not_offered() -> None:
    client = TurnClient(Network(make_server()))
    token = ReservationToken(b"12345678")
    assert error_code(client.allocate(token)) == 508
    assert error_code(client.allocate(token, EvenPort())) == 400
    assert error_code(client.allocate(token, RequestedAddressFamily(AddressFamily.IPV4))) == 400
    assert error_code(client.allocate(EvenPort(reserve=True))) == 508
    response = client.allocate(EvenPort())
    relayed = response.get(XorRelayedAddress)
    assert relayed is not None and relayed.port % 2 == 0


@pytest.mark.parametrize(("requested", "granted"), [(None, 600), (0, 600), (10, 600), (1800, 1800), (99_999, 3600)])
def test_allocation_lifetime_is_clamped(requested: int | None, granted: int) -> None:
    client = TurnClient(Network(make_server()))
    response = client.allocate(*([] if requested is None else [Lifetime(requested)]))
    assert response.get(Lifetime) == Lifetime(granted)


def test_binding_needs_no_credentials() -> None:
    client = TurnClient(Network(make_server()))
    response = client.transact(Method.BINDING, auth=False)
    assert response.message_class is MessageClass.SUCCESS
    assert response.get(XorMappedAddress) == XorMappedAddress(IPv4Address(CLIENT[0]), CLIENT[1])
    assert response.get(MessageIntegrity) is None


def test_unknown_method_and_malformed_requests_get_400() -> None:
    client = TurnClient(Network(make_server()))
    assert error_code(client.transact(0x00A, auth=False)) == 400
    good = client.encode(Method.ALLOCATE, [Username("a" * 5)], auth=False)
    truncated_attribute = good[:2] + (len(good) - 20 + 4).to_bytes(2, "big") + good[4:] + b"\x00\x06\x00\x09"
    assert [error_code(r) for r in client.send_raw(truncated_attribute)] == [400]


def test_relayed_port_that_cannot_be_opened_is_replaced() -> None:
    network = Network(make_server(), fail_next_opens=1)
    client = allocated(network)
    assert network.server.metrics.relay_open_failures == 1
    assert client.relay is not None and network.open_relays == {1: client.relay}


def test_allocate_is_508_when_no_relayed_port_opens() -> None:
    network = Network(make_server(), fail_next_opens=5)
    client = TurnClient(network)
    response = client.allocate()
    assert error_code(response) == 508
    assert verify_message_integrity(response, client.key)
    assert len(network.server.allocations) == 0 and network.open_relays == {}


def test_draining_refuses_new_allocations_and_keeps_the_old() -> None:
    client = allocated()
    server = client.network.server
    server.draining = True
    newcomer = TurnClient(client.network, five_tuple(("198.51.100.8", 1)))
    assert error_code(newcomer.allocate()) == 508
    assert client.refresh().message_class is MessageClass.SUCCESS
    server.draining = False
    assert newcomer.allocate().message_class is MessageClass.SUCCESS


def test_replaced_secrets_apply_to_later_requests() -> None:
    network = Network(make_server())
    client = allocated(network)
    network.server.replace_secrets((OLD_SECRET,))
    assert error_code(client.refresh()) == 401  # its credential came from the retired secret
    rotated = TurnClient(network, five_tuple(("198.51.100.8", 1)), secret=OLD_SECRET)
    assert rotated.allocate().message_class is MessageClass.SUCCESS
    assert len(network.server.allocations) == 2  # the old allocation stays until it expires
    with pytest.raises(ValueError, match="secrets"):
        network.server.replace_secrets(())


def test_retransmission_while_the_port_opens_waits_for_the_answer() -> None:
    server = make_server()
    client = TurnClient(Network(server))
    client.challenge()
    request = client.encode(Method.ALLOCATE, [RequestedTransport()])
    (open_relay,) = server.handle_client_data(request, client.ft, NOW)
    assert server.handle_client_data(request, client.ft, NOW) == []
    assert server.metrics.drops[DropReason.RETRANSMIT_PENDING] == 1
    (answer,) = server.relay_opened(open_relay.allocation_id, NOW)  # type: ignore[union-attr]
    assert server.handle_client_data(request, client.ft, NOW + 1) == [answer]
