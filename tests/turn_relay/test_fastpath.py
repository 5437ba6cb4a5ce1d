"""The C fast path (turn_relay/_fastpath.c) against the pure-Python path, on real loopback sockets.

The same scripted traffic goes through a node with the fast path and one without, with the same
ports, clock, nonce key and random source; every datagram the client and the peers receive, the
core's metrics and the exporter's text must be byte for byte the same. Then targeted checks that
the engine forgets what the core forgets, drops and counts what the gate refuses, and leaves
malformed ChannelData to the core.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from tests.conftest import IN_CI
from turn_relay.addresses import Address
from turn_relay.auth import mint_turn_credentials
from turn_relay.config import RelayConfig
from turn_relay.exporter import render
from turn_relay.limits import TokenBucket
from turn_relay.node import FAST_PATH_AVAILABLE, RelayNode
from turn_relay.server import RelayServer
from turn_relay.stun import (
    AddressFamily,
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
    RequestedAddressFamily,
    RequestedTransport,
    Username,
    XorPeerAddress,
    decode_message,
    encode_message,
    long_term_key,
)

SECRET = b"fastpath-test-secret"
REALM = "kijkmee"
T0 = 1_800_000_000.0
CLIENT_HELLO = bytes([22, 0xFE, 0xFD]) + bytes(10) + b"client hello"
SERVER_HELLO = bytes([22, 0xFE, 0xFD]) + bytes(10) + b"server hello"
DTLS_APP = bytes([23, 0xFE, 0xFD]) + bytes(10) + b"ciphertext"
SRTP = bytes([0x80, 0x6F]) + bytes(10) + b"srtp payload"
STUN_CHECK = bytes(20)
PLAIN = b"PLAINTEXT-MARKER-fast"

requires_fast_path = pytest.mark.skipif(
    not FAST_PATH_AVAILABLE and not IN_CI, reason="turn_relay._fastpath is not built (needs a C compiler)"
)


@pytest.fixture(params=["c", "python"])
def fast_path(request: pytest.FixtureRequest) -> bool:
    """Both data planes; CI builds the extension, so there the C one must be present."""
    if request.param == "c" and not FAST_PATH_AVAILABLE:
        if IN_CI:
            pytest.fail("turn_relay._fastpath is not built")
        pytest.skip("turn_relay._fastpath is not built (needs a C compiler)")
    return bool(request.param == "c")


def channel_frame(number: int, payload: bytes, length: int | None = None, trailing: bytes = b"") -> bytes:
    size = len(payload) if length is None else length
    return number.to_bytes(2, "big") + size.to_bytes(2, "big") + payload + trailing


def error_code(message: Message) -> int | None:
    attribute = message.get(ErrorCodeAttribute)
    return None if attribute is None else int(attribute.code)


def free_udp_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass
class Ports:
    """Chosen once, so that both data planes run on the very same addresses."""

    host: str
    listener: int
    client: int
    peer_a: int
    peer_b: int
    relay_low: int

    @classmethod
    def pick(cls, host: str) -> Ports:
        low = 43000 + random.randrange(0, 2000, 50)
        return cls(host, free_udp_port(host), free_udp_port(host), free_udp_port(host), free_udp_port(host), low)


@dataclass
class Rig:
    """One node on loopback with a fake clock, a TURN client socket and two peer sockets."""

    node: RelayNode
    server: RelayServer
    clock: list[float]
    listener: Address
    client: socket.socket
    peers: dict[str, socket.socket]
    sent: int = 0
    transcript: list[tuple[str, bytes]] = field(default_factory=list)
    nonce: str | None = None
    username: str = ""
    password: str = ""
    tids: random.Random = field(default_factory=lambda: random.Random(5))

    def close(self) -> None:
        self.node.close()
        for sock in (self.client, *self.peers.values()):
            sock.close()

    @property
    def host(self) -> str:
        return self.listener[0]

    def peer_address(self, name: str) -> Address:
        host, port = self.peers[name].getsockname()[:2]
        return (host, port)

    async def settle(self) -> None:
        """Wait until the node has read every datagram sent to it, then collect what came back."""
        for _ in range(2000):
            if self.node.counters.datagrams_in >= self.sent:
                break
            await asyncio.sleep(0.001)
        else:
            raise AssertionError(f"the node read {self.node.counters.datagrams_in} of {self.sent} datagrams")
        for name, sock in (("client", self.client), *self.peers.items()):
            while True:
                try:
                    data = sock.recv(70000)
                except BlockingIOError:
                    break
                self.transcript.append((name, data))

    async def from_client(self, data: bytes) -> None:
        self.client.sendto(data, self.listener)
        self.sent += 1
        await self.settle()

    async def from_peer(self, name: str, data: bytes, relay: Address, open: bool = True) -> None:
        """``open``: the relayed port is open (else nobody reads what the peer sends)."""
        self.peers[name].sendto(data, relay)
        self.sent += open
        if not open:
            await asyncio.sleep(0.05)
        await self.settle()

    def received(self, name: str, since: int) -> list[bytes]:
        return [data for who, data in self.transcript[since:] if who == name]

    async def request(self, method: int, attributes: list[Attribute], auth: bool = True) -> Message:
        """One request, answered (retried once on 401/438 with the nonce given)."""
        for _ in range(2):
            attrs = list(attributes)
            key = None
            if auth and self.nonce is not None:
                attrs += [Username(self.username), Realm(REALM), Nonce(self.nonce)]
                key = long_term_key(self.username, REALM, self.password)
            message = Message(method, MessageClass.REQUEST, self.tids.randbytes(12), tuple(attrs))
            mark = len(self.transcript)
            await self.from_client(encode_message(message, integrity_key=key))
            answers = [decode_message(data) for data in self.received("client", mark) if data[0] < 0x40]
            assert len(answers) == 1, answers
            response = answers[0]
            nonce, code = response.get(Nonce), error_code(response)
            if auth and nonce is not None and (code == 438 or (code == 401 and key is None)):
                self.nonce = nonce.text
                continue
            return response
        return response

    async def channel_bind(self, number: int, peer: Address) -> Message:
        return await self.request(Method.CHANNEL_BIND, [ChannelNumber(number), xor_peer(peer)])

    def advance(self, seconds: float) -> None:
        self.clock[0] += seconds
        self.node.run_timers()


def xor_peer(peer: Address) -> XorPeerAddress:
    import ipaddress

    return XorPeerAddress(ipaddress.ip_address(peer[0]), peer[1])


def udp(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


@pytest.fixture
def make_rig() -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def make(ports: Ports, fast: bool, **overrides: object) -> Rig:
        host = ports.host
        settings: dict[str, object] = {
            "secrets": (SECRET,), "relay_addresses": (host,), "realm": REALM, "allow_peer": (f"{host}/128"
                                                                                          if ":" in host
                                                                                          else f"{host}/32",),
            "min_port": ports.relay_low, "max_port": ports.relay_low + 49, "bandwidth_limit": 20_000,
        }
        settings.update(overrides)
        config = RelayConfig(**settings)  # type: ignore[arg-type]
        server = RelayServer(config, nonce_key=b"k" * 32, random_bytes=random.Random(11).randbytes)
        clock = [T0]
        node = RelayNode(server, clock=lambda: clock[0], fast_path=fast)
        listener = node.listen_udp(host, ports.listener)
        peers = {"peer_a": udp(host, ports.peer_a), "peer_b": udp(host, ports.peer_b)}
        rig = Rig(node, server, clock, listener, udp(host, ports.client), peers)
        rig.username, rig.password = mint_turn_credentials(SECRET, "fast", T0, 3600)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()


async def allocate(rig: Rig) -> Address:
    attributes: list[Attribute] = [RequestedTransport(), Lifetime(600)]
    if ":" in rig.host:
        attributes.append(RequestedAddressFamily(AddressFamily.IPV6))
    response = await rig.request(Method.ALLOCATE, attributes)
    assert response.message_class is MessageClass.SUCCESS, error_code(response)
    relay = rig.server.allocations.by_five_tuple[next(iter(rig.server.allocations.by_five_tuple))].relay
    return relay


async def scenario(rig: Rig) -> list[tuple[str, bytes]]:
    """Everything a client and two peers do to a relay in a call's life, and what goes wrong."""
    peer_a, peer_b = rig.peer_address("peer_a"), rig.peer_address("peer_b")
    await rig.request(Method.BINDING, [], auth=False)
    relay = await allocate(rig)
    assert (await rig.request(Method.CREATE_PERMISSION, [xor_peer(peer_b)])).message_class is MessageClass.SUCCESS
    assert (await rig.channel_bind(0x4001, peer_a)).message_class is MessageClass.SUCCESS
    # the gate before DTLS: plain and RTP refused both ways, STUN passes, handshakes key the path
    for payload in (PLAIN, SRTP, STUN_CHECK, b"", DTLS_APP):
        await rig.from_client(channel_frame(0x4001, payload))
    for payload in (PLAIN, SRTP, STUN_CHECK):
        await rig.from_peer("peer_a", payload, relay)
    await rig.from_client(channel_frame(0x4001, CLIENT_HELLO))
    await rig.from_peer("peer_a", SRTP, relay)
    await rig.from_peer("peer_a", SERVER_HELLO, relay)
    for payload in (SRTP, DTLS_APP, CLIENT_HELLO, PLAIN):
        await rig.from_client(channel_frame(0x4001, payload))
        await rig.from_peer("peer_a", payload, relay)
    # a peer with a permission and no channel: Data indications; Send indications to it
    await rig.from_peer("peer_b", SERVER_HELLO, relay)
    send = Message(Method.SEND, MessageClass.INDICATION, rig.tids.randbytes(12),
                   (xor_peer(peer_b), Data(CLIENT_HELLO)))
    await rig.from_client(encode_message(send))
    await rig.from_peer("peer_b", SRTP, relay)
    # malformed or odd ChannelData: the core judges (exact padding is the engine's)
    for frame in (
        channel_frame(0x4001, SRTP[:5], trailing=b"\0\0\0"),  # exact padding
        channel_frame(0x4001, SRTP[:5], trailing=b"\0\0"),  # 2 bytes after 5: not the padding
        channel_frame(0x4001, SRTP[:8], trailing=b"\0\0\0\0"),  # 4 trailing bytes
        channel_frame(0x4001, SRTP, length=len(SRTP) + 1),  # length overruns the datagram
        channel_frame(0x4001, b"", length=0)[:3],  # shorter than the header
        channel_frame(0x4FFF, SRTP),  # in range, not bound
        channel_frame(0x5000, SRTP),  # RFC 5766 number, not accepted by default
        channel_frame(0x3FFF, SRTP),  # below the range: first byte of STUN's
        channel_frame(0x4001, bytes([0x80])),  # one byte of RTP class
    ):
        await rig.from_client(frame)
    # the bandwidth cap (20,000 B/s, both directions) with the clock standing still, then refilled
    for _ in range(14):
        await rig.from_client(channel_frame(0x4001, SRTP + bytes(1000)))
        await rig.from_peer("peer_a", SRTP + bytes(1000), relay)
    rig.advance(0.5)
    for _ in range(8):
        await rig.from_client(channel_frame(0x4001, SRTP + bytes(1000)))
    rig.advance(2.0)
    # the permission lapses (300 s) while the channel (600 s) does not; a refresh brings both back
    rig.advance(300.0)
    await rig.from_client(channel_frame(0x4001, SRTP))
    await rig.from_peer("peer_a", SRTP, relay)
    assert (await rig.request(Method.CREATE_PERMISSION, [xor_peer(peer_a)])).message_class is MessageClass.SUCCESS
    await rig.from_client(channel_frame(0x4001, SRTP))
    await rig.from_peer("peer_a", SRTP, relay)
    assert (await rig.channel_bind(0x4001, peer_a)).message_class is MessageClass.SUCCESS
    # the allocation ends (Refresh 0): nothing more is relayed
    assert (await rig.request(Method.REFRESH, [Lifetime(0)])).message_class is MessageClass.SUCCESS
    await rig.from_client(channel_frame(0x4001, SRTP))
    await rig.from_peer("peer_a", SRTP, relay, open=False)
    return rig.transcript


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
@requires_fast_path
async def test_same_traffic_gives_byte_identical_results(make_rig: Callable[..., Rig], host: str) -> None:
    ports = Ports.pick(host)
    results = {}
    for fast in (True, False):
        rig = make_rig(ports, fast)
        transcript = await scenario(rig)
        results[fast] = (transcript, rig.server.metrics.snapshot(), vars(rig.node.counters).copy(), render(rig.node))
        if fast:
            assert rig.node.fast is not None
            stats = rig.node.fast.stats()
            assert stats["packets_to_peer"] >= 10 and stats["packets_to_client"] >= 5, stats
            assert stats["not-rfc7983"] >= 2 and stats["rtp-before-dtls"] >= 2 and stats["bandwidth"] >= 1, stats
        rig.close()
    (fast_transcript, fast_metrics, fast_counters, fast_text), (slow_transcript, slow_metrics, slow_counters,
                                                                 slow_text) = results[True], results[False]
    assert fast_transcript == slow_transcript
    assert fast_metrics == slow_metrics
    assert fast_counters == slow_counters
    assert fast_text == slow_text
    # the scenario did what it says (the Python path being the reference)
    drops = slow_metrics
    assert drops["drops.not-rfc7983"] >= 4 and drops["drops.rtp-before-dtls"] >= 3
    assert drops["drops.bandwidth"] >= 5 and drops["drops.malformed"] >= 4
    assert drops["drops.no-permission"] == 2 and drops["drops.no-channel"] == 1 and drops["drops.no-allocation"] == 1
    assert any(data[4:] == SRTP for who, data in slow_transcript if who == "client")


async def bound_rig(make_rig: Callable[..., Rig], fast: bool, **overrides: object) -> tuple[Rig, Address]:
    rig = make_rig(Ports.pick("127.0.0.1"), fast, **overrides)
    relay = await allocate(rig)
    assert (await rig.channel_bind(0x4001, rig.peer_address("peer_a"))).message_class is MessageClass.SUCCESS
    return rig, relay


@requires_fast_path
async def test_expiry_removes_the_binding_from_the_engine(make_rig: Callable[..., Rig]) -> None:
    rig, relay = await bound_rig(make_rig, True)
    fast = rig.node.fast
    assert fast is not None
    peer = rig.peer_address("peer_a")
    assert fast.bindings() == [(rig.node.relays[relay].fileno(), 0x4001, peer[0], peer[1], False)]
    rig.advance(299.0)
    assert len(fast.bindings()) == 1
    rig.advance(1.0)  # the permission lapses at 300 s: the engine forgets the channel with it
    assert fast.bindings() == []
    await rig.from_client(channel_frame(0x4001, STUN_CHECK))
    assert rig.server.metrics.drops["no-permission"] == 1  # type: ignore[index]
    assert (await rig.channel_bind(0x4001, peer)).message_class is MessageClass.SUCCESS  # refreshes both
    assert len(fast.bindings()) == 1
    rig.advance(601.0)  # the allocation (600 s) ends: its relayed socket closes and the engine forgets it
    assert fast.bindings() == [] and rig.node.relays == {}
    before = fast.stats()["packets_to_peer"]
    await rig.from_client(channel_frame(0x4001, STUN_CHECK))
    assert rig.server.metrics.drops["no-allocation"] == 1  # type: ignore[index]
    assert fast.stats()["packets_to_peer"] == before and rig.received("peer_a", 0) == []


@requires_fast_path
async def test_refresh_to_zero_and_close_remove_bindings(make_rig: Callable[..., Rig]) -> None:
    rig, relay = await bound_rig(make_rig, True)
    fast = rig.node.fast
    assert fast is not None and len(fast.bindings()) == 1
    assert (await rig.request(Method.REFRESH, [Lifetime(0)])).message_class is MessageClass.SUCCESS
    assert fast.bindings() == []
    await rig.from_peer("peer_a", STUN_CHECK, relay, open=False)  # the relayed port is closed
    assert rig.received("client", 0)[-1][0] < 0x40  # the last thing the client got is the Refresh answer
    rig2, _ = await bound_rig(make_rig, True)
    assert rig2.node.fast is not None and len(rig2.node.fast.bindings()) == 1
    rig2.node.drain()  # draining takes no new allocations; the existing ones relay on, in C too
    assert len(rig2.node.fast.bindings()) == 1
    rig2.node.close()
    assert rig2.node.fast.bindings() == []


@requires_fast_path
async def test_refused_classes_are_dropped_and_counted_in_c(make_rig: Callable[..., Rig]) -> None:
    rig, relay = await bound_rig(make_rig, True)
    fast = rig.node.fast
    assert fast is not None
    for _ in range(3):
        await rig.from_client(channel_frame(0x4001, PLAIN))
        await rig.from_peer("peer_a", PLAIN, relay)
    await rig.from_client(channel_frame(0x4001, SRTP))
    await rig.from_peer("peer_a", SRTP, relay)
    assert rig.received("peer_a", 0) == [] and [d for d in rig.received("client", 0) if d[0] >= 0x40] == []
    drops = rig.server.metrics.drops
    assert drops["not-rfc7983"] == 6 and drops["rtp-before-dtls"] == 2  # type: ignore[index]
    assert fast.stats()["not-rfc7983"] == 6 and fast.stats()["rtp-before-dtls"] == 2
    # handshakes (left to the core, which keys the path) open the way for SRTP, which C then relays
    await rig.from_client(channel_frame(0x4001, CLIENT_HELLO))
    await rig.from_peer("peer_a", SERVER_HELLO, relay)
    assert fast.bindings()[0][4] is True
    await rig.from_client(channel_frame(0x4001, SRTP))
    await rig.from_peer("peer_a", SRTP, relay)
    assert rig.received("peer_a", 0) == [CLIENT_HELLO, SRTP]
    assert fast.stats()["packets_to_peer"] == 1 and fast.stats()["packets_to_client"] == 1
    assert rig.server.metrics.packets_to_peer == 2 and rig.server.metrics.bytes_to_peer == len(CLIENT_HELLO + SRTP)


@requires_fast_path
async def test_malformed_channel_data_goes_to_python_which_rejects_it(make_rig: Callable[..., Rig]) -> None:
    rig, _relay = await bound_rig(make_rig, True, allow_unencrypted=True)
    fast = rig.node.fast
    assert fast is not None
    malformed = [
        channel_frame(0x4001, b"abcdefgh", trailing=b"\0\0\0\0"),  # 4 bytes beyond the data
        channel_frame(0x4001, b"abcdefgh", length=9),  # length past the end
        b"\x40\x01\x00",  # a partial header
        channel_frame(0x5001, b"abcdefgh"),  # RFC 5766 channel number without legacy_channels
    ]
    for frame in malformed:
        await rig.from_client(frame)
    await rig.from_client(channel_frame(0x4002, b"abcdefgh"))  # in range, unbound
    assert rig.server.metrics.drops["malformed"] == 4  # type: ignore[index]
    assert rig.server.metrics.drops["no-channel"] == 1  # type: ignore[index]
    assert rig.received("peer_a", 0) == [] and fast.stats()["packets_to_peer"] == 0
    await rig.from_client(channel_frame(0x4001, b"abcde", trailing=b"\0\0"))  # the core allows up to 3 bytes
    await rig.from_client(channel_frame(0x4001, b"abcde", trailing=b"\0\0\0"))  # exact padding: C
    assert rig.received("peer_a", 0) == [b"abcde", b"abcde"] and fast.stats()["packets_to_peer"] == 1


@requires_fast_path
async def test_legacy_channel_numbers_need_the_option(make_rig: Callable[..., Rig]) -> None:
    rig, relay = await bound_rig(make_rig, True, allow_unencrypted=True, legacy_channels=True)
    fast = rig.node.fast
    assert fast is not None
    peer = rig.peer_address("peer_b")
    assert (await rig.channel_bind(0x7FFF, peer)).message_class is MessageClass.SUCCESS
    await rig.from_client(channel_frame(0x7FFF, PLAIN))
    await rig.from_peer("peer_b", PLAIN, relay)
    assert rig.received("peer_b", 0) == [PLAIN] and channel_frame(0x7FFF, PLAIN) in rig.received("client", 0)
    assert fast.stats()["packets_to_peer"] == 1 and fast.stats()["packets_to_client"] == 1
    with pytest.raises(ValueError, match="channel number"):
        fast.set_allocation(rig.node.relays[relay].fileno(), rig.node.listeners[rig.listener].fileno(),
                            "127.0.0.1", 1, None, [(0x3FFF, "127.0.0.1", 1, T0 + 9, T0 + 9, True)])


@requires_fast_path
def test_c_token_bucket_does_the_same_arithmetic() -> None:
    from turn_relay import _fastpath

    generator = random.Random(3)
    for _ in range(200):
        rate = generator.choice([1500.0, 20_000.0, 2_000_000.0, 1e9, 1234.5])
        now = T0 + generator.random()
        python, c = TokenBucket(rate, rate, now), _fastpath.TokenBucket(rate, rate, now)
        for _ in range(50):
            now += generator.choice([0.0, 0.0, 1e-6, 0.001, 0.37, -0.5, 2.0])
            amount = generator.choice([0, 1, 180, 1000, 1200, 65_535])
            assert python.take(amount, now) == c.take(amount, now)
            assert (python.tokens, python.stamp) == (c.tokens, c.stamp)
            assert python.is_full(now) == c.is_full(now)


async def test_fast_path_fixture_round_trip(fast_path: bool, make_rig: Callable[..., Rig]) -> None:
    """A keyed media path relays SRTP both ways on either data plane, and counts it the same."""
    rig, relay = await bound_rig(make_rig, fast_path)
    assert (rig.node.fast is not None) is fast_path
    await rig.from_client(channel_frame(0x4001, CLIENT_HELLO))
    await rig.from_peer("peer_a", SERVER_HELLO, relay)
    for _ in range(20):
        await rig.from_client(channel_frame(0x4001, SRTP))
        await rig.from_peer("peer_a", SRTP, relay)
    assert rig.received("peer_a", 0) == [CLIENT_HELLO] + [SRTP] * 20
    assert [d for d in rig.received("client", 0) if d[0] >= 0x40] == [channel_frame(0x4001, SERVER_HELLO)] + [
        channel_frame(0x4001, SRTP)] * 20
    metrics = rig.server.metrics
    assert (metrics.packets_to_peer, metrics.packets_to_client) == (21, 21)
    assert metrics.bytes_to_client == len(SERVER_HELLO) + 20 * len(SRTP)


def test_without_the_extension_the_node_runs_in_python() -> None:
    """A build without a C compiler has no turn_relay._fastpath: the node falls back by itself."""
    import subprocess
    import sys

    program = (
        "import sys, asyncio; sys.modules['turn_relay._fastpath'] = None\n"
        "from turn_relay import node\n"
        "from tests.turn_relay.relay_harness import make_server\n"
        "async def main():\n"
        "    relay = node.RelayNode(make_server())\n"
        "    print(node.FAST_PATH_AVAILABLE, relay.fast is None)\n"
        "    relay.close()\n"
        "asyncio.run(main())\n"
    )
    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True,
                          cwd=root)
    assert done.stdout.split() == ["False", "True"], done.stderr
