"""RelayServer: the sans-IO TURN relay (RFC 8656). Bytes and ``now`` in, :mod:`actions <turn_relay.actions>` out.

The I/O layer feeds what clients send (:meth:`RelayServer.handle_client_data`), what peers send to
relayed addresses (:meth:`RelayServer.handle_peer_data`), the outcome of opening relayed sockets
(:meth:`RelayServer.relay_opened` / :meth:`RelayServer.relay_failed`), closed TCP/TLS connections
and timer expiries, and carries out the actions each call returns. Randomness (relayed ports,
transaction ids) comes from the injected ``random_bytes``; there is no clock, socket or log here.

Every input ends in at least one action or exactly one count in ``metrics.drops``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from turn_relay.actions import Action, CloseRelay, OpenRelay, SendToClient
from turn_relay.addresses import Address, FiveTuple, parse_host
from turn_relay.allocation import AllocationTable
from turn_relay.authenticate import Authenticator
from turn_relay.config import RelayConfig, relay_hosts
from turn_relay.errors import BadRequest, CredentialsRefused, InsufficientCapacity, RequestError, UnknownAttributeError
from turn_relay.handlers import Outcome, Request, TurnRequests
from turn_relay.limits import AuthFailureTracker, BucketFactory, UnauthenticatedLimiter
from turn_relay.metrics import DropReason, RelayMetrics
from turn_relay.policy import PeerPolicy
from turn_relay.relaying import DataPlane
from turn_relay.responses import ReplyTo, error_response, success_response
from turn_relay.stun import (
    Attribute,
    Fingerprint,
    Lifetime,
    Message,
    MessageClass,
    Method,
    StunDecodeError,
    XorMappedAddress,
    XorRelayedAddress,
    decode_message,
    verify_fingerprint,
)

SOURCE_SWEEP_INTERVAL = 10.0
"""Seconds between sweeps that forget per-source entries with nothing left to remember."""
MAX_OPEN_ATTEMPTS = 5
"""Relayed ports tried for one Allocate before it is answered 508."""

_METHOD_NAMES = {method.value: method.name.lower() for method in Method}


class RelayServer:
    """All allocations of one relay node and the rules they obey."""

    def __init__(self, config: RelayConfig, *, nonce_key: bytes, random_bytes: Callable[[int], bytes]) -> None:
        """``config`` is validated here; ``nonce_key`` is a random secret made at start-up (16+ bytes);
        ``random_bytes(n)`` returns ``n`` random bytes (``os.urandom`` in production)."""
        self.config = config.validate()
        self.metrics = RelayMetrics()
        """Counters for the exporter."""
        self.allocations = AllocationTable()
        """Every allocation (read-only for callers)."""
        ports = range(config.min_port, config.max_port + 1)
        own = config.relay_addresses + config.listen_addresses
        self.policy = PeerPolicy.build(config.allow_peer, own, ports)
        """The peer policy in force."""
        self._auth = Authenticator(config, nonce_key)
        self._turn = TurnRequests(
            config, self.policy, self.allocations, self.metrics, random_bytes, relay_hosts(config)
        )
        self._data = DataPlane(self.allocations, self.policy, self.metrics, random_bytes, not config.allow_unencrypted)
        self.unauthenticated = UnauthenticatedLimiter(
            config.unauthenticated_rate,
            config.unauthenticated_burst,
            config.unauthenticated_global_rate,
            config.max_tracked_sources,
            0.0,
        )
        """Rate limits of unauthenticated requests."""
        self.auth_failures = AuthFailureTracker(
            config.auth_failure_limit, config.auth_failure_window, config.auth_block_time, config.max_tracked_sources
        )
        """fail2ban state."""
        self._sweep_due: float | None = None
        self._channel_end = 0x80 if config.legacy_channels else 0x50  # first bytes that start ChannelData
        self._authenticated: dict[int, Callable[[Request], Outcome]] = {
            Method.ALLOCATE: self._turn.allocate,
            Method.REFRESH: self._turn.refresh,
            Method.CREATE_PERMISSION: self._turn.create_permission,
            Method.CHANNEL_BIND: self._turn.channel_bind,
        }
        self._unauthenticated: dict[int, Callable[[Message, FiveTuple], tuple[Attribute, ...]]] = {
            Method.BINDING: self._binding,
        }

    # -- entry points ---------------------------------------------------------------------------

    def handle_client_data(self, data: bytes, five_tuple: FiveTuple, now: float) -> list[Action]:
        """A UDP datagram, or one frame from a TCP/TLS stream (see ``turn_relay.stun.StreamFramer``),
        that a client sent to a listener."""
        if data and 0x40 <= data[0] < self._channel_end:
            return self._data.channel_data_from_client(data, five_tuple, now)
        if not data or data[0] > 0x3F:
            return self._drop(DropReason.MALFORMED)
        try:
            message = decode_message(data)
        except StunDecodeError as exc:
            header = exc.header
            if header is None or header.message_class is not MessageClass.REQUEST:
                return self._drop(DropReason.MALFORMED)
            reply_to = ReplyTo(header.method, header.transaction_id, None, False)
            return self._unauthenticated_error(reply_to, BadRequest(str(exc)), five_tuple, now)
        if message.get(Fingerprint) is not None and not verify_fingerprint(message):
            return self._drop(DropReason.BAD_FINGERPRINT)
        if message.message_class is MessageClass.REQUEST:
            return self._request(message, five_tuple, now)
        if message.message_class is MessageClass.INDICATION and message.method == Method.SEND:
            return self._data.send_indication(message, five_tuple, now)
        return self._drop(DropReason.UNEXPECTED_MESSAGE)

    def handle_peer_data(self, relay: Address, peer: Address, data: bytes, now: float) -> list[Action]:
        """A UDP datagram a peer sent to the relayed address ``relay``."""
        return self._data.from_peer(relay, peer, data, now)

    def relay_opened(self, allocation_id: int, now: float) -> list[Action]:
        """The I/O layer opened the relayed socket asked for by :class:`OpenRelay`: answer the Allocate."""
        allocation = self.allocations.by_id.get(allocation_id)
        if allocation is None or allocation.pending is None:
            return []
        pending, allocation.pending = allocation.pending, None
        allocation.expires = now + pending.lifetime
        host, port = allocation.relay
        client_host, client_port = allocation.five_tuple.client
        attributes = (
            XorRelayedAddress(parse_host(host), port),
            Lifetime(pending.lifetime),
            XorMappedAddress(parse_host(client_host), client_port),
        )
        response = success_response(pending.reply_to, attributes, self.config.software)
        allocation.allocate_response = response
        self.metrics.allocations_created += 1
        self.metrics.successes_sent += 1
        return [SendToClient(allocation.five_tuple, response)]

    def relay_failed(self, allocation_id: int, now: float) -> list[Action]:
        """The relayed port of :class:`OpenRelay` could not be bound: try another, or answer 508."""
        allocation = self.allocations.by_id.get(allocation_id)
        if allocation is None or allocation.pending is None:
            return []
        pending = allocation.pending
        self.metrics.relay_open_failures += 1
        pending.failed_ports.add(allocation.relay[1])
        if len(pending.failed_ports) < MAX_OPEN_ATTEMPTS:
            port = self._turn.free_port(allocation.relay[0], pending.even_port, pending.failed_ports)
            if port is not None:
                self.allocations.move_relay(allocation, (allocation.relay[0], port))
                return [OpenRelay(allocation.id, allocation.relay, pending.dont_fragment)]
        self.allocations.remove(allocation)
        error = InsufficientCapacity("no relayed port opened")
        return [self._error(pending.reply_to, error, allocation.five_tuple, now)]

    def connection_lost(self, five_tuple: FiveTuple, now: float) -> list[Action]:
        """A TCP/TLS client connection closed: its allocation ends with it (RFC 8656 section 3.1)."""
        allocation = self.allocations.by_five_tuple.get(five_tuple)
        if allocation is None:
            return []
        self.allocations.remove(allocation)
        self.metrics.allocations_deleted += 1
        return [CloseRelay(allocation.id, allocation.relay)]

    def handle_timer(self, now: float) -> list[Action]:
        """Expire what is due: allocations (closing their sockets), permissions, channels, and
        per-source limiter entries."""
        lapsed = self.allocations.expire(now)
        self.metrics.allocations_expired += len(lapsed)
        if self._sweep_due is not None and now >= self._sweep_due:
            self.unauthenticated.sweep(now)
            self.auth_failures.sweep(now)
            tracked = len(self.unauthenticated.sources) + len(self.auth_failures.failures)
            self._sweep_due = now + SOURCE_SWEEP_INTERVAL if tracked + len(self.auth_failures.blocked) else None
        return [CloseRelay(allocation.id, allocation.relay) for allocation in lapsed]

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` should next be called, or None if nothing is pending."""
        deadlines = [when for when in (self.allocations.next_deadline(), self._sweep_due) if when is not None]
        return min(deadlines) if deadlines else None

    @property
    def draining(self) -> bool:
        """Set by the I/O layer to drain the node: new Allocates get 508, existing allocations run on."""
        return self._turn.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self._turn.draining = value

    @property
    def bucket_factory(self) -> BucketFactory:
        """Makes the bandwidth bucket of each new allocation: :class:`~turn_relay.limits.TokenBucket`, or
        the I/O layer's own with the same arithmetic when it takes tokens outside the core (the node's
        C fast path). Set it before the first allocation."""
        return self._turn.bucket_factory

    @bucket_factory.setter
    def bucket_factory(self, factory: BucketFactory) -> None:
        self._turn.bucket_factory = factory

    def replace_secrets(self, secrets: tuple[bytes, ...]) -> None:
        """New TURN REST secrets (e.g. on SIGHUP): later requests are checked against them; existing
        allocations stay. Raises RelayConfigError for an empty list or an empty secret."""
        config = dataclasses.replace(self.config, secrets=secrets).validate()
        self._auth.replace_secrets(config.secrets)
        self.config = config

    # -- requests -------------------------------------------------------------------------------

    def _request(self, message: Message, five_tuple: FiveTuple, now: float) -> list[Action]:
        if self.auth_failures.is_blocked(five_tuple.client[0], now):
            return self._drop(DropReason.BLOCKED_SOURCE)
        name = _METHOD_NAMES.get(message.method, "other")
        self.metrics.requests[name] = self.metrics.requests.get(name, 0) + 1
        reply_to = ReplyTo(message.method, message.transaction_id, None, message.get(Fingerprint) is not None)
        unauthenticated = self._unauthenticated.get(message.method)
        if unauthenticated is not None:
            if not self._admit_unauthenticated(five_tuple, now):
                return self._drop(DropReason.RATE_LIMITED)
            if message.unknown_required:
                return [self._error(reply_to, UnknownAttributeError(message.unknown_required), five_tuple, now)]
            return self._success(reply_to, unauthenticated(message, five_tuple), five_tuple)
        handler = self._authenticated.get(message.method)
        if handler is None:
            return self._unauthenticated_error(reply_to, BadRequest("unknown method"), five_tuple, now)
        try:
            authenticated = self._auth.authenticate(message, five_tuple, now)
        except CredentialsRefused as error:
            self._count_failure(five_tuple.client[0], now)
            return self._unauthenticated_error(reply_to, error, five_tuple, now)
        except RequestError as error:
            return self._unauthenticated_error(reply_to, error, five_tuple, now)
        reply_to = reply_to._replace(key=authenticated.key)
        try:
            if message.unknown_required:
                raise UnknownAttributeError(message.unknown_required)
            outcome = handler(Request(message, five_tuple, now, authenticated.username, reply_to))
        except RequestError as error:
            return [self._error(reply_to, error, five_tuple, now)]
        return self._answer(reply_to, outcome, five_tuple)

    def _binding(self, message: Message, five_tuple: FiveTuple) -> tuple[Attribute, ...]:
        host, port = five_tuple.client
        return (XorMappedAddress(parse_host(host), port),)

    def _answer(self, reply_to: ReplyTo, outcome: Outcome, five_tuple: FiveTuple) -> list[Action]:
        actions: list[Action] = list(outcome.actions)
        if isinstance(outcome.response, bytes):
            actions.append(SendToClient(five_tuple, outcome.response))
            self.metrics.successes_sent += 1
        elif outcome.response is not None:
            actions += self._success(reply_to, outcome.response, five_tuple)
        return actions

    def _success(self, reply_to: ReplyTo, attributes: tuple[Attribute, ...], five_tuple: FiveTuple) -> list[Action]:
        self.metrics.successes_sent += 1
        return [SendToClient(five_tuple, success_response(reply_to, attributes, self.config.software))]

    def _error(self, reply_to: ReplyTo, error: RequestError, five_tuple: FiveTuple, now: float) -> SendToClient:
        """The one place a refused request is answered."""
        errors = self.metrics.errors_sent
        errors[error.code] = errors.get(error.code, 0) + 1
        challenge = self._auth.challenge(five_tuple, now) if error.challenge else ()
        return SendToClient(five_tuple, error_response(reply_to, error, challenge, self.config.software))

    def _unauthenticated_error(
        self, reply_to: ReplyTo, error: RequestError, five_tuple: FiveTuple, now: float
    ) -> list[Action]:
        """An error answered before authentication: blocked sources and the rate limit apply."""
        if self.auth_failures.is_blocked(five_tuple.client[0], now):
            return self._drop(DropReason.BLOCKED_SOURCE)
        if not self._admit_unauthenticated(five_tuple, now):
            return self._drop(DropReason.RATE_LIMITED)
        return [self._error(reply_to, error, five_tuple, now)]

    def _admit_unauthenticated(self, five_tuple: FiveTuple, now: float) -> bool:
        self._arm_sweep(now)
        return self.unauthenticated.allow(five_tuple.client[0], now)

    def _count_failure(self, host: str, now: float) -> None:
        self.metrics.auth_failures += 1
        self._arm_sweep(now)
        if self.auth_failures.record_failure(host, now):
            self.metrics.sources_blocked += 1

    def _arm_sweep(self, now: float) -> None:
        if self._sweep_due is None:
            self._sweep_due = now + SOURCE_SWEEP_INTERVAL

    def _drop(self, reason: DropReason) -> list[Action]:
        self.metrics.drops[reason] += 1
        return []
