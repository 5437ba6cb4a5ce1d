"""The authenticated TURN requests: Allocate, Refresh, CreatePermission, ChannelBind (RFC 8656 7-11).

Each handler takes a :class:`Request` that has passed authentication and the unknown-attribute
check, changes the allocation table, and returns an :class:`Outcome`, or raises a
:class:`~turn_relay.errors.RequestError` that the server answers in its one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from turn_relay.actions import Action, CloseRelay, OpenRelay
from turn_relay.addresses import FiveTuple, family_of, host_family, host_text
from turn_relay.allocation import Allocation, AllocationTable, PendingOpen
from turn_relay.config import RelayConfig
from turn_relay.errors import (
    AddressFamilyNotSupported,
    AllocationMismatch,
    AllocationQuotaReached,
    BadRequest,
    Forbidden,
    InsufficientCapacity,
    PeerAddressFamilyMismatch,
    UnknownAttributeError,
    UnsupportedTransport,
    WrongCredentials,
)
from turn_relay.limits import BucketFactory, TokenBucket
from turn_relay.metrics import DropReason, RelayMetrics
from turn_relay.policy import PeerPolicy
from turn_relay.responses import ReplyTo
from turn_relay.stun import (
    PROTOCOL_UDP,
    AddressFamily,
    Attribute,
    AttrType,
    ChannelNumber,
    DontFragment,
    EvenPort,
    Lifetime,
    Message,
    RequestedAddressFamily,
    RequestedTransport,
    ReservationToken,
    XorPeerAddress,
    is_channel_number,
)


class Request(NamedTuple):
    """An authenticated request."""

    message: Message
    """The decoded request."""
    five_tuple: FiveTuple
    """Where it came from."""
    now: float
    """When."""
    username: str
    """Its (verified) USERNAME."""
    reply_to: ReplyTo
    """How to answer it, MESSAGE-INTEGRITY key included."""


class Outcome(NamedTuple):
    """A handled request: what to answer and what else to do."""

    response: tuple[Attribute, ...] | bytes | None
    """Attributes of the success response; bytes of an earlier response to resend as they are;
    None when the answer comes later (Allocate waits for its relayed port)."""
    actions: tuple[Action, ...] = ()
    """Actions for the I/O layer, before the response."""


def desired_lifetime(requested: Lifetime | None, config: RelayConfig) -> int:
    """RFC 8656 7.3: the client's LIFETIME clamped to the maximum, but never below the default."""
    if requested is None:
        return config.default_lifetime
    return max(config.default_lifetime, min(requested.seconds, config.max_lifetime))


class TurnRequests:
    """Handlers of the TURN methods over one allocation table."""

    def __init__(
        self,
        config: RelayConfig,
        policy: PeerPolicy,
        table: AllocationTable,
        metrics: RelayMetrics,
        random_bytes: Callable[[int], bytes],
        relay_hosts: dict[int, str],
    ) -> None:
        self._config = config
        self._policy = policy
        self._table = table
        self._metrics = metrics
        self._random_bytes = random_bytes
        self._relay_hosts = relay_hosts
        self._ports = range(config.min_port, config.max_port + 1)
        self.draining = False
        """Refuse new allocations with 508 (see ``RelayServer.draining``)."""
        self.bucket_factory: BucketFactory = TokenBucket
        """Makes each new allocation's bandwidth bucket (see ``RelayServer.bucket_factory``)."""

    def allocate(self, request: Request) -> Outcome:
        """RFC 8656 7.2: check the request, reserve a relayed port and ask the I/O layer to open it."""
        existing = self._table.by_five_tuple.get(request.five_tuple)
        if existing is not None:
            return self._allocate_again(existing, request)
        message, config = request.message, self._config
        host, even = self._check_allocate(message)
        if self.draining:
            raise InsufficientCapacity("the node is draining")
        if self._table.per_user.get(request.username, 0) >= config.max_allocations_per_user:
            raise AllocationQuotaReached("allocations per user")
        if len(self._table) >= config.max_allocations:
            raise InsufficientCapacity("allocations in total")
        port = self.free_port(host, even, set())
        if port is None:
            raise InsufficientCapacity("no relayed port free")
        limit = config.bandwidth_limit
        bucket = None if limit is None else self.bucket_factory(limit, limit, request.now)
        allocation = self._table.create(request.five_tuple, request.username, (host, port), bucket)
        lifetime = desired_lifetime(message.get(Lifetime), config)
        allocation.expires = request.now + lifetime
        allocation.transaction_id = message.transaction_id
        dont_fragment = message.get(DontFragment) is not None
        allocation.pending = PendingOpen(request.reply_to, lifetime, dont_fragment, even)
        self._table.schedule(allocation, allocation.expires)
        return Outcome(None, (OpenRelay(allocation.id, allocation.relay, dont_fragment),))

    def _allocate_again(self, allocation: Allocation, request: Request) -> Outcome:
        """An Allocate on a 5-tuple that has an allocation: a retransmission gets the same answer."""
        if allocation.username != request.username:
            raise WrongCredentials("allocation made with another username")
        if allocation.transaction_id != request.message.transaction_id:
            raise AllocationMismatch("5-tuple already allocated")
        if allocation.allocate_response is None:
            self._metrics.drops[DropReason.RETRANSMIT_PENDING] += 1
            return Outcome(None)
        return Outcome(allocation.allocate_response)

    def _check_allocate(self, message: Message) -> tuple[str, bool]:
        """The Allocate's attribute checks in RFC 8656 7.2's order; returns (relay host, even port)."""
        transport = message.get(RequestedTransport)
        if transport is None:
            raise BadRequest("no REQUESTED-TRANSPORT")
        if transport.protocol != PROTOCOL_UDP:
            raise UnsupportedTransport("only UDP is relayed")
        if message.get(DontFragment) is not None and not self._config.dont_fragment:
            raise UnknownAttributeError((AttrType.DONT_FRAGMENT,))
        family, even, token = message.get(RequestedAddressFamily), message.get(EvenPort), message.get(ReservationToken)
        if token is not None:
            if even is not None or family is not None:
                raise BadRequest("RESERVATION-TOKEN with EVEN-PORT or REQUESTED-ADDRESS-FAMILY")
            raise InsufficientCapacity("this relay makes no reservations")
        if even is not None and even.reserve:
            raise InsufficientCapacity("this relay makes no reservations")
        code = AddressFamily.IPV4 if family is None else family.family
        host = self._relay_hosts.get(code)
        if host is None:
            raise AddressFamilyNotSupported(f"family {code}")
        return host, even is not None

    def free_port(self, host: str, even: bool, exclude: set[int]) -> int | None:
        """A free relayed port on ``host``, from a random point of the range."""
        start = int.from_bytes(self._random_bytes(4), "big") % len(self._ports)
        return self._table.free_port(host, self._ports, start, even, exclude)

    def refresh(self, request: Request) -> Outcome:
        """RFC 8656 7.3: extend the allocation's lifetime, or delete it for LIFETIME 0."""
        allocation = self._allocation(request)
        family = request.message.get(RequestedAddressFamily)
        if family is not None and family.family != host_family(allocation.relay[0]):
            raise PeerAddressFamilyMismatch("REQUESTED-ADDRESS-FAMILY of another family")
        requested = request.message.get(Lifetime)
        if requested is not None and requested.seconds == 0:
            self._table.remove(allocation)
            self._metrics.allocations_deleted += 1
            return Outcome((Lifetime(0),), (CloseRelay(allocation.id, allocation.relay),))
        lifetime = desired_lifetime(requested, self._config)
        allocation.expires = request.now + lifetime
        return Outcome((Lifetime(lifetime),))

    def create_permission(self, request: Request) -> Outcome:
        """RFC 8656 9.2: install or refresh permissions for every XOR-PEER-ADDRESS, or none."""
        allocation = self._allocation(request)
        peers = request.message.get_all(XorPeerAddress)
        if not peers:
            raise BadRequest("no XOR-PEER-ADDRESS")
        for peer in peers:
            self._check_peer(allocation, peer)
        hosts = {host_text(peer.address): peer for peer in peers}
        new = hosts.keys() - allocation.permissions.keys()
        if len(allocation.permissions) + len(new) > self._config.max_permissions_per_allocation:
            raise InsufficientCapacity("permissions per allocation")
        expires = request.now + self._config.permission_lifetime
        for host, peer in hosts.items():
            allocation.install_permission(peer.address, host, expires, self._policy.is_own(peer.address))
        self._table.schedule(allocation, expires)
        return Outcome(())

    def channel_bind(self, request: Request) -> Outcome:
        """RFC 8656 11.2: bind (or refresh) a channel to a peer and install its permission."""
        allocation = self._allocation(request)
        number, peer = request.message.get(ChannelNumber), request.message.get(XorPeerAddress)
        if number is None or peer is None:
            raise BadRequest("CHANNEL-NUMBER and XOR-PEER-ADDRESS are required")
        legacy = self._config.legacy_channels and 0x5000 <= number.number <= 0x7FFF
        if not (is_channel_number(number.number) or legacy):
            raise BadRequest("channel number out of 0x4000..0x4FFF")
        self._check_peer(allocation, peer)
        host = host_text(peer.address)
        address = (host, peer.port)
        bound = allocation.channels.get(number.number)
        if bound is not None and bound.peer != address:
            raise BadRequest("channel bound to another peer")
        other = allocation.channels_by_peer.get(address)
        if other is not None and other.number != number.number:
            raise BadRequest("peer bound to another channel")
        config = self._config
        if bound is None and len(allocation.channels) >= config.max_channels_per_allocation:
            raise InsufficientCapacity("channels per allocation")
        if host not in allocation.permissions and len(allocation.permissions) >= config.max_permissions_per_allocation:
            raise InsufficientCapacity("permissions per allocation")
        now = request.now
        own = self._policy.is_own(peer.address)
        allocation.install_permission(peer.address, host, now + config.permission_lifetime, own)
        allocation.bind_channel(number.number, address, now + config.channel_lifetime)
        self._table.schedule(allocation, now + min(config.permission_lifetime, config.channel_lifetime))
        return Outcome(())

    def _allocation(self, request: Request) -> Allocation:
        """The request's allocation with lapsed state swept, or 437 (none, or not open yet) / 441."""
        allocation = self._table.by_five_tuple.get(request.five_tuple)
        if allocation is None or allocation.pending is not None:
            raise AllocationMismatch("no allocation on this 5-tuple")
        if allocation.username != request.username:
            raise WrongCredentials("allocation made with another username")
        allocation.sweep(request.now)
        return allocation

    def _check_peer(self, allocation: Allocation, peer: XorPeerAddress) -> None:
        """443 for a peer of the other family, 403 for one the peer policy refuses."""
        if family_of(peer.address) != host_family(allocation.relay[0]):
            raise PeerAddressFamilyMismatch("peer of another family than the relayed address")
        if not self._policy.allows(peer.address, peer.port):
            raise Forbidden("peer address refused")
