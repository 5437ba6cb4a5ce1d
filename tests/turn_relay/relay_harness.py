"""A TURN client and an in-memory I/O layer wired to a RelayServer, like aioquic's ``transfer()``.

The client builds requests with the STUN codec and TURN REST credentials from
``mint_turn_credentials``; the harness plays the I/O layer: it opens relayed "sockets" when asked
(or fails to, on demand), delivers SendToClient actions back to the client and collects
SendToPeer actions as what the network would carry to peers.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from turn_relay.actions import Action, CloseRelay, OpenRelay, SendToClient, SendToPeer
from turn_relay.addresses import Address, FiveTuple, Transport, parse_host
from turn_relay.auth import mint_turn_credentials
from turn_relay.config import RelayConfig
from turn_relay.server import RelayServer
from turn_relay.stun import (
    Attribute,
    ChannelNumber,
    Data,
    ErrorCodeAttribute,
    Lifetime,
    Message,
    MessageClass,
    Method,
    Nonce,
    Realm,
    RequestedTransport,
    Username,
    XorPeerAddress,
    XorRelayedAddress,
    decode_message,
    encode_message,
    long_term_key,
)

SECRET = b"kijkmee-relay-test-secret"
OLD_SECRET = b"kijkmee-relay-old-secret"
REALM = "kijkmee.test"
NONCE_KEY = b"0123456789abcdef"
NOW = 1_718_000_000.0
RELAY_V4 = "203.0.113.1"
RELAY_V6 = "2001:db8::1"
LISTENER = (RELAY_V4, 3478)
CLIENT = ("198.51.100.7", 50000)
PEER = ("93.184.216.34", 40000)
"""A public address, as the default peer policy requires."""
PEER_V6 = ("2606:4700::1111", 40000)

# Representative payloads by RFC 7983 class.
CLIENT_HELLO = bytes([22, 0xFE, 0xFD]) + bytes(10) + b"client hello"
SERVER_HELLO = bytes([22, 0xFE, 0xFD]) + bytes(10) + b"server hello"
DTLS_APP = bytes([23, 0xFE, 0xFD]) + bytes(10) + b"ciphertext"
SRTP = bytes([0x80, 0x6F]) + bytes(10) + b"srtp payload"
STUN_CHECK = bytes(20)
PLAIN = b"hello in plain text"


def make_config(**overrides: object) -> RelayConfig:
    settings: dict[str, object] = {
        "secrets": (SECRET,),
        "relay_addresses": (RELAY_V4, RELAY_V6),
        "realm": REALM,
    }
    settings.update(overrides)
    return RelayConfig(**settings)  # type: ignore[arg-type]


def make_server(seed: int = 7, **overrides: object) -> RelayServer:
    return RelayServer(make_config(**overrides), nonce_key=NONCE_KEY, random_bytes=random.Random(seed).randbytes)


def five_tuple(client: Address = CLIENT, transport: Transport = Transport.UDP) -> FiveTuple:
    return FiveTuple(transport, client, LISTENER)


@dataclass
class Network:
    """The in-memory I/O layer around one server."""

    server: RelayServer
    now: float = NOW
    fail_next_opens: int = 0
    """Make this many OpenRelay actions fail (port already in use elsewhere)."""
    open_relays: dict[int, Address] = field(default_factory=dict)
    closed: list[CloseRelay] = field(default_factory=list)
    to_peers: list[SendToPeer] = field(default_factory=list)

    def carry_out(self, actions: Iterable[Action]) -> list[SendToClient]:
        """Do what the server asked; return what it sent to clients."""
        sent: list[SendToClient] = []
        for action in actions:
            if isinstance(action, OpenRelay):
                if self.fail_next_opens:
                    self.fail_next_opens -= 1
                    sent += self.carry_out(self.server.relay_failed(action.allocation_id, self.now))
                else:
                    self.open_relays[action.allocation_id] = action.relay
                    sent += self.carry_out(self.server.relay_opened(action.allocation_id, self.now))
            elif isinstance(action, CloseRelay):
                self.open_relays.pop(action.allocation_id, None)
                self.closed.append(action)
            elif isinstance(action, SendToPeer):
                self.to_peers.append(action)
            else:
                sent.append(action)
        return sent

    def from_client(self, data: bytes, ft: FiveTuple) -> list[SendToClient]:
        return self.carry_out(self.server.handle_client_data(data, ft, self.now))

    def from_peer(self, relay: Address, peer: Address, data: bytes) -> list[SendToClient]:
        return self.carry_out(self.server.handle_peer_data(relay, peer, data, self.now))

    def advance(self, seconds: float) -> None:
        """Move the clock and fire every timer that falls due on the way."""
        target = self.now + seconds
        while (due := self.server.next_timer()) is not None and due <= target:
            self.now = max(self.now, due)
            self.carry_out(self.server.handle_timer(self.now))
        self.now = target
        self.carry_out(self.server.handle_timer(self.now))


class TurnClient:
    """A minimal TURN client over one 5-tuple."""

    def __init__(
        self,
        network: Network,
        ft: FiveTuple | None = None,
        user: str = "alice",
        secret: bytes = SECRET,
        ttl: int = 3600,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.network = network
        self.ft = ft or five_tuple()
        self.username, self.password = credentials or mint_turn_credentials(secret, user, network.now, ttl)
        self.realm = REALM
        self.nonce: str | None = None
        self._tids = random.Random(hash(self.ft) & 0xFFFF)
        self.relay: Address | None = None

    @property
    def key(self) -> bytes:
        return long_term_key(self.username, self.realm, self.password)

    def new_tid(self) -> bytes:
        return self._tids.randbytes(12)

    def encode(
        self,
        method: int,
        attributes: Sequence[Attribute] = (),
        *,
        auth: bool = True,
        tid: bytes | None = None,
        fingerprint: bool = False,
        key: bytes | None = None,
        message_class: MessageClass = MessageClass.REQUEST,
    ) -> bytes:
        attrs = list(attributes)
        if auth:
            assert self.nonce is not None, "no nonce yet: call challenge() first"
            attrs += [Username(self.username), Realm(self.realm), Nonce(self.nonce)]
        message = Message(method, message_class, tid or self.new_tid(), tuple(attrs))
        return encode_message(message, integrity_key=(key or self.key) if auth else None, fingerprint=fingerprint)

    def send_raw(self, data: bytes) -> list[Message]:
        return [decode_message(sent.data) for sent in self.network.from_client(data, self.ft) if sent.data[0] < 0x40]

    def transact(
        self, method: int, attributes: Sequence[Attribute] = (), *, retry_stale: bool = True, **options: object
    ) -> Message:
        """Send a request; return its one response. Like a real client, answer 438 by retrying
        with the fresh nonce (unless ``retry_stale`` is False)."""
        responses = self.send_raw(self.encode(method, attributes, **options))  # type: ignore[arg-type]
        assert len(responses) == 1, responses
        response = responses[0]
        if retry_stale and error_code(response) == 438 and options.get("auth", True):
            nonce = response.get(Nonce)
            assert nonce is not None
            self.nonce = nonce.text
            return self.transact(method, attributes, retry_stale=False, **options)
        return response

    def challenge(self) -> Message:
        """An unauthenticated Allocate, to learn the NONCE (RFC 8656's first round trip)."""
        response = self.transact(Method.ALLOCATE, [RequestedTransport()], auth=False)
        assert error_code(response) == 401
        nonce = response.get(Nonce)
        assert nonce is not None
        self.nonce = nonce.text
        return response

    def allocate(self, *attributes: Attribute, transport: bool = True) -> Message:
        """401 round trip if needed, then the authenticated Allocate."""
        if self.nonce is None:
            self.challenge()
        attrs = ([RequestedTransport()] if transport else []) + list(attributes)
        response = self.transact(Method.ALLOCATE, attrs)
        if response.message_class is MessageClass.SUCCESS:
            relayed = response.get(XorRelayedAddress)
            assert relayed is not None
            self.relay = (str(relayed.address), relayed.port)
        return response

    def refresh(self, lifetime: int | None = None, *extra: Attribute) -> Message:
        attrs: list[Attribute] = [] if lifetime is None else [Lifetime(lifetime)]
        return self.transact(Method.REFRESH, attrs + list(extra))

    def create_permission(self, *peers: Address) -> Message:
        return self.transact(Method.CREATE_PERMISSION, [peer_attribute(peer) for peer in peers])

    def channel_bind(self, number: int, peer: Address) -> Message:
        return self.transact(Method.CHANNEL_BIND, [ChannelNumber(number), peer_attribute(peer)])

    def send_indication(self, peer: Address, data: bytes) -> list[Message]:
        raw = self.encode(
            Method.SEND,
            [peer_attribute(peer), Data(data)],
            auth=False,
            message_class=MessageClass.INDICATION,
        )
        return self.send_raw(raw)

    def channel_data(self, number: int, data: bytes) -> list[SendToClient]:
        frame = number.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data
        return self.network.from_client(frame, self.ft)


def peer_attribute(peer: Address) -> XorPeerAddress:
    return XorPeerAddress(parse_host(peer[0]), peer[1])


def error_code(message: Message) -> int | None:
    attribute = message.get(ErrorCodeAttribute)
    return None if attribute is None else attribute.code


def allocated(network: Network | None = None, **client_options: object) -> TurnClient:
    """A client with an allocation on a fresh (or the given) network."""
    client = TurnClient(network or Network(make_server()), **client_options)  # type: ignore[arg-type]
    response = client.allocate()
    assert response.message_class is MessageClass.SUCCESS, error_code(response)
    return client
