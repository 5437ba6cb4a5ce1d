"""Allocations keyed by their 5-tuple, with their permissions, channels and lifetimes (RFC 8656 2.2).

Plain state, no I/O: times come in as ``now``. An :class:`AllocationTable` indexes allocations by
5-tuple (client side), by relayed address (peer side) and by id (the I/O layer's handle), keeps
the per-user counts the quotas need and a heap of deadlines so that expiry costs nothing until
something is due.
"""

from __future__ import annotations

import heapq
import math
import struct
from dataclasses import dataclass, field

from turn_relay.addresses import Address, FiveTuple
from turn_relay.classify import MediaPath
from turn_relay.limits import RateBucket
from turn_relay.responses import ReplyTo
from turn_relay.stun import IPAddress

MAX_MEDIA_PATHS = 256
"""Peer transport addresses per allocation whose DTLS handshakes the gate tracks (channel
bindings always get one); a peer spraying handshakes from many ports cannot grow memory."""

_CHANNEL = struct.Struct("!H")


class Permission:
    """A permission for one peer IP address (ports are not part of it)."""

    __slots__ = ("expires", "ip", "own")

    def __init__(self, ip: IPAddress, expires: float, own: bool) -> None:
        self.ip = ip
        """The peer IP, kept as an object for the XOR-PEER-ADDRESS of Data indications."""
        self.expires = expires
        """When it lapses unless refreshed."""
        self.own = own
        """The IP is this host's own (``PeerPolicy.is_own``): only relayed ports may be reached."""


class ChannelBinding:
    """A channel number bound to a peer transport address: the precomputed forwarding entry of the
    ChannelData fast path in both directions."""

    __slots__ = ("expires", "number", "path", "peer", "permission", "prefix")

    def __init__(self, number: int, peer: Address, expires: float, permission: Permission, path: MediaPath) -> None:
        self.number = number
        """0x4000-0x4FFF."""
        self.peer = peer
        """The peer transport address."""
        self.expires = expires
        """When the binding lapses unless refreshed."""
        self.permission = permission
        """The permission of the peer's IP, checked on every packet."""
        self.path = path
        """The encrypted-only gate's state for this peer."""
        self.prefix = _CHANNEL.pack(number)
        """The first two bytes of every ChannelData sent to the client on this channel."""


@dataclass(eq=False)
class PendingOpen:
    """What an Allocate whose relayed port is being opened needs for its deferred response."""

    reply_to: ReplyTo
    """How to answer the Allocate, with the long-term key that signs it (forgotten once sent)."""
    lifetime: int
    """The lifetime granted."""
    dont_fragment: bool
    """DONT-FRAGMENT was requested."""
    even_port: bool
    """EVEN-PORT was requested."""
    failed_ports: set[int] = field(default_factory=set)
    """Ports the I/O layer could not open for it."""


class Allocation:
    """One allocation: a relayed transport address serving one client 5-tuple."""

    __slots__ = (
        "allocate_response",
        "bucket",
        "channels",
        "channels_by_peer",
        "expires",
        "five_tuple",
        "id",
        "paths",
        "pending",
        "permissions",
        "relay",
        "scheduled",
        "transaction_id",
        "username",
    )

    def __init__(
        self, allocation_id: int, five_tuple: FiveTuple, username: str, relay: Address, bucket: RateBucket | None
    ) -> None:
        self.id = allocation_id
        """The handle the I/O layer knows the relayed socket by."""
        self.five_tuple = five_tuple
        self.username = username
        """The USERNAME that made it: later requests must use the same (else 441)."""
        self.relay = relay
        """The relayed transport address."""
        self.expires = -math.inf
        self.bucket = bucket
        """Bandwidth cap, both directions together; None when uncapped."""
        self.permissions: dict[str, Permission] = {}
        """Peer host -> permission."""
        self.channels: dict[int, ChannelBinding] = {}
        """Channel number -> binding (client to peer)."""
        self.channels_by_peer: dict[Address, ChannelBinding] = {}
        """Peer transport address -> binding (peer to client)."""
        self.paths: dict[Address, MediaPath] = {}
        """Peer transport address -> encrypted-only gate state."""
        self.transaction_id = b""
        """The Allocate's transaction id, to recognise its retransmissions."""
        self.allocate_response: bytes | None = None
        """The success response, resent to retransmissions (RFC 8656 7.2); None while pending."""
        self.pending: PendingOpen | None = None
        """Set until the I/O layer has opened the relayed port."""
        self.scheduled = math.inf
        """The deadline this allocation is in the table's heap for."""

    def install_permission(self, ip: IPAddress, host: str, expires: float, own: bool) -> None:
        """Create or refresh the permission for ``host``."""
        permission = self.permissions.get(host)
        if permission is not None:
            permission.expires = expires
            return
        permission = self.permissions[host] = Permission(ip, expires, own)
        for binding in self.channels.values():  # a binding that outlived its permission regains it
            if binding.peer[0] == host:
                binding.permission = permission

    def path(self, peer: Address, create: bool) -> MediaPath | None:
        """The gate state for ``peer``; created if asked and under :data:`MAX_MEDIA_PATHS`."""
        path = self.paths.get(peer)
        if path is None and create and len(self.paths) < MAX_MEDIA_PATHS:
            path = self.paths[peer] = MediaPath()
        return path

    def bind_channel(self, number: int, peer: Address, expires: float) -> None:
        """Create or refresh a channel binding; the permission must be installed first."""
        binding = self.channels.get(number)
        if binding is not None:
            binding.expires = expires
            return
        path = self.paths.get(peer) or MediaPath()
        self.paths[peer] = path
        binding = ChannelBinding(number, peer, expires, self.permissions[peer[0]], path)
        self.channels[number] = binding
        self.channels_by_peer[peer] = binding

    def earliest_deadline(self) -> float:
        """The next moment something of this allocation lapses."""
        deadline = self.expires
        for permission in self.permissions.values():
            deadline = min(deadline, permission.expires)
        for binding in self.channels.values():
            deadline = min(deadline, binding.expires)
        return deadline

    def sweep(self, now: float) -> None:
        """Remove lapsed channel bindings and permissions, and gate state nothing uses any more."""
        for number, binding in list(self.channels.items()):
            if binding.expires <= now:
                del self.channels[number]
                del self.channels_by_peer[binding.peer]
        for host, permission in list(self.permissions.items()):
            if permission.expires <= now:
                del self.permissions[host]
        for peer in list(self.paths):
            if peer[0] not in self.permissions and peer not in self.channels_by_peer:
                del self.paths[peer]


class AllocationTable:
    """Every allocation, indexed three ways, with per-user counts and a deadline heap."""

    def __init__(self) -> None:
        self.by_five_tuple: dict[FiveTuple, Allocation] = {}
        self.by_relay: dict[Address, Allocation] = {}
        """Relayed address -> allocation; also the set of relayed ports in use (pending included)."""
        self.by_id: dict[int, Allocation] = {}
        self.per_user: dict[str, int] = {}
        """USERNAME -> allocations it holds; users with none are not kept."""
        self._next_id = 1
        self._heap: list[tuple[float, int]] = []

    def __len__(self) -> int:
        return len(self.by_id)

    def create(self, five_tuple: FiveTuple, username: str, relay: Address, bucket: RateBucket | None) -> Allocation:
        """Register a new (pending) allocation; the caller sets its lifetime and schedules it."""
        allocation = Allocation(self._next_id, five_tuple, username, relay, bucket)
        self._next_id += 1
        self.by_id[allocation.id] = allocation
        self.by_five_tuple[five_tuple] = allocation
        self.by_relay[relay] = allocation
        self.per_user[username] = self.per_user.get(username, 0) + 1
        return allocation

    def move_relay(self, allocation: Allocation, relay: Address) -> None:
        """Give a pending allocation another relayed address (its port could not be opened)."""
        del self.by_relay[allocation.relay]
        allocation.relay = relay
        self.by_relay[relay] = allocation

    def remove(self, allocation: Allocation) -> None:
        """Forget an allocation and everything it holds."""
        del self.by_id[allocation.id]
        del self.by_five_tuple[allocation.five_tuple]
        del self.by_relay[allocation.relay]
        left = self.per_user[allocation.username] - 1
        if left:
            self.per_user[allocation.username] = left
        else:
            del self.per_user[allocation.username]

    def schedule(self, allocation: Allocation, deadline: float) -> None:
        """Make sure the heap wakes up for ``allocation`` no later than ``deadline``."""
        if deadline < allocation.scheduled:
            allocation.scheduled = deadline
            heapq.heappush(self._heap, (deadline, allocation.id))

    def expire(self, now: float) -> list[Allocation]:
        """Sweep every allocation with something due; return (and forget) those that lapsed."""
        lapsed: list[Allocation] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, allocation_id = heapq.heappop(heap)
            allocation = self.by_id.get(allocation_id)
            if allocation is None or when != allocation.scheduled:
                continue  # superseded by an earlier deadline, or already gone
            allocation.scheduled = math.inf
            if allocation.expires <= now:
                self.remove(allocation)
                lapsed.append(allocation)
                continue
            allocation.sweep(now)
            self.schedule(allocation, allocation.earliest_deadline())
        return lapsed

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has work, or None (it may wake early for a superseded entry)."""
        heap = self._heap
        while heap and (heap[0][1] not in self.by_id or self.by_id[heap[0][1]].scheduled != heap[0][0]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def free_port(self, host: str, ports: range, start: int, even: bool, exclude: set[int]) -> int | None:
        """A port of ``ports`` free on ``host``, searching from index ``start``; None if all are taken."""
        size = len(ports)
        for step in range(size):
            port = ports[(start + step) % size]
            if (even and port % 2) or port in exclude or (host, port) in self.by_relay:
                continue
            return port
        return None
