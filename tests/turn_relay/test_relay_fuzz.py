"""The relay's one-exit rule: whatever arrives, RelayServer never raises, and every input ends in
at least one action or exactly one counted drop. A STUN message the codec cannot decode is
answered 400 (a request whose header was readable) or dropped and counted.

A seeded loop feeds FUZZ_INPUTS inputs -- valid client messages of every kind (authenticated
requests, indications, ChannelData on a bound channel) and the codec fuzzer's seeds, run through
its stacked mutations -- from the allocated client's 5-tuple and from strangers, and datagrams to
the relayed address from permitted and unknown peers. A hypothesis test adds shrinking search.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.turn_relay.relay_harness import (
    CLIENT_HELLO,
    PEER,
    SERVER_HELLO,
    SRTP,
    Network,
    TurnClient,
    allocated,
    five_tuple,
    make_server,
    peer_attribute,
)
from tests.turn_relay.test_stun_fuzz import MUTATIONS, _seeds
from turn_relay.actions import Action, CloseRelay, OpenRelay, SendToClient, SendToPeer
from turn_relay.addresses import Address, FiveTuple, parse_host
from turn_relay.metrics import DropReason
from turn_relay.server import RelayServer
from turn_relay.stun import (
    ChannelData,
    ChannelNumber,
    Data,
    ErrorCodeAttribute,
    Lifetime,
    MessageClass,
    Method,
    RequestedTransport,
    StunDecodeError,
    decode_message,
    encode_channel_data,
)

FUZZ_INPUTS = 30_000
SEED = 0x54524E

GENEROUS = {
    "unauthenticated_rate": 1e9,
    "unauthenticated_burst": 1e9,
    "unauthenticated_global_rate": 1e9,
    "auth_failure_limit": 10**9,
}
"""Limits out of the way so that malformed requests reach their 400 instead of the rate limit, and
mutated requests (bad MESSAGE-INTEGRITY under a good nonce) do not get the client blocked."""


def _client_seeds(client: TurnClient) -> list[bytes]:
    peer = peer_attribute(PEER)
    seeds = [
        client.encode(Method.ALLOCATE, [RequestedTransport()]),
        client.encode(Method.REFRESH, [Lifetime(900)]),
        client.encode(Method.CREATE_PERMISSION, [peer], fingerprint=True),
        client.encode(Method.CHANNEL_BIND, [ChannelNumber(0x4000), peer]),
        client.encode(Method.BINDING, auth=False),
        client.encode(Method.SEND, [peer, Data(CLIENT_HELLO)], auth=False, message_class=MessageClass.INDICATION),
    ]
    for payload in (CLIENT_HELLO, SRTP, b"", b"x" * 40):
        seeds.append(encode_channel_data(ChannelData(0x4000, payload), stream=False))
    return seeds


def _decodes(data: bytes) -> bool:
    try:
        decode_message(data)
    except StunDecodeError:
        return False
    return True


class Checker:
    """Feeds one server and checks every call against the one-exit rule."""

    def __init__(self, server: RelayServer) -> None:
        self.server = server
        self.now = 1_718_000_000.0

    def _settle(self, actions: list[Action]) -> list[Action]:
        """Open relayed ports as a real I/O layer would; check every action's type and target."""
        done: list[Action] = []
        for action in actions:
            assert isinstance(action, SendToClient | SendToPeer | OpenRelay | CloseRelay)
            if isinstance(action, SendToPeer):
                assert self.server.policy.allows(parse_host(action.peer[0]), action.peer[1])
            if isinstance(action, OpenRelay):
                done += self._settle(self.server.relay_opened(action.allocation_id, self.now))
            done.append(action)
        return done

    def feed(self, data: bytes, source: FiveTuple | tuple[Address, Address]) -> None:
        before = self.server.metrics.dropped
        if isinstance(source, FiveTuple):
            actions = self._settle(self.server.handle_client_data(data, source, self.now))
        else:
            actions = self._settle(self.server.handle_peer_data(source[0], source[1], data, self.now))
        dropped = self.server.metrics.dropped - before
        assert (dropped, bool(actions)) in ((1, False), (0, True)), (data, actions, dropped)
        if isinstance(source, FiveTuple) and data and data[0] < 0x40 and not _decodes(data):
            self._check_malformed(actions)
        self.now += 0.001

    def _check_malformed(self, actions: list[Action]) -> None:
        if not actions:
            return  # dropped, and counted above
        assert len(actions) == 1 and isinstance(actions[0], SendToClient)
        response = decode_message(actions[0].data)
        assert response.message_class is MessageClass.ERROR
        assert response.get(ErrorCodeAttribute) == ErrorCodeAttribute(400, "")


def _setup(**overrides: object) -> tuple[Checker, TurnClient, list[bytes]]:
    client = allocated(Network(make_server(**overrides)))
    client.channel_bind(0x4000, PEER)
    checker = Checker(client.network.server)
    checker.now = client.network.now
    return checker, client, _client_seeds(client) + _seeds(random.Random(SEED))


def _run(checker: Checker, client: TurnClient, seeds: list[bytes], count: int, rng: random.Random) -> None:
    assert client.relay is not None
    sources: list[FiveTuple | tuple[Address, Address]] = [
        client.ft,
        client.ft,
        five_tuple(("198.51.100.200", 4000)),
        (client.relay, PEER),
        (client.relay, ("10.0.0.1", 53)),
        (("203.0.113.1", 1), PEER),
    ]
    for _ in range(count):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.choice([0, 1, 1, 2, 3])):
            rng.choice(MUTATIONS)(rng, data, seeds)
        checker.feed(bytes(data), rng.choice(sources))


def test_seeded_fuzz_never_raises_and_always_answers_or_counts() -> None:
    checker, client, seeds = _setup(**GENEROUS)
    _run(checker, client, seeds, FUZZ_INPUTS, random.Random(SEED))
    metrics = checker.server.metrics
    assert metrics.errors_sent.get(400, 0) > 100  # malformed requests were answered
    assert metrics.drops[DropReason.MALFORMED] > 100
    assert metrics.packets_to_peer > 0 and metrics.packets_to_client > 0  # valid ones still flowed


def test_seeded_fuzz_with_default_limits() -> None:
    checker, client, seeds = _setup()
    _run(checker, client, seeds, FUZZ_INPUTS // 3, random.Random(SEED + 1))
    assert checker.server.metrics.drops[DropReason.RATE_LIMITED] > 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.sampled_from(["client", "stranger", "peer"]))
def test_hypothesis_any_bytes(data: bytes, who: str) -> None:
    checker, client, _ = _setup(**GENEROUS)
    assert client.relay is not None
    sources: dict[str, FiveTuple | tuple[Address, Address]] = {
        "client": client.ft,
        "stranger": five_tuple(("198.51.100.200", 4000)),
        "peer": (client.relay, PEER),
    }
    checker.feed(data, sources[who])
    checker.feed(b"\x40\x00" + len(data).to_bytes(2, "big") + data, sources[who])
    checker.feed(SERVER_HELLO, (client.relay, PEER))
