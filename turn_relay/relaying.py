"""The data plane: Send and Data indications, ChannelData both ways (RFC 8656 sections 10-12).

ChannelData is the fast path a browser uses for all its media: one dict lookup for the allocation
(by 5-tuple or relayed address), one for the precomputed :class:`ChannelBinding`, the gate, the
bandwidth bucket and one output tuple. Its 4-byte header is parsed here with one ``unpack_from``
rather than through :func:`turn_relay.stun.decode_channel_data`, which copies the datagram and
builds a validated dataclass; the checks are the same (channel bound, length within the data,
at most 3 bytes of padding).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from turn_relay.actions import Action, SendToClient, SendToPeer
from turn_relay.addresses import Address, FiveTuple, Transport, family_of, host_family, host_text
from turn_relay.allocation import Allocation, AllocationTable, Permission
from turn_relay.classify import check_without_path, is_dtls_handshake
from turn_relay.metrics import DropReason, RelayMetrics
from turn_relay.policy import PeerPolicy
from turn_relay.stun import Data, Message, MessageClass, Method, XorPeerAddress, encode_message

_CHANNEL_HEADER = struct.Struct("!HH")
_LENGTH = struct.Struct("!H")
_PADDING = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")
MAX_INDICATION_DATA = 0xFFFF - 24 - 4 - 3
"""Largest payload a Data indication carries: the message length is 16 bits, and an IPv6
XOR-PEER-ADDRESS (24 bytes), the DATA header and its padding come with it."""


class DataPlane:
    """Moves application data between clients and peers for an :class:`AllocationTable`."""

    def __init__(
        self,
        table: AllocationTable,
        policy: PeerPolicy,
        metrics: RelayMetrics,
        random_bytes: Callable[[int], bytes],
        encrypted_only: bool,
    ) -> None:
        self._by_five_tuple = table.by_five_tuple
        self._by_relay = table.by_relay
        self._policy = policy
        self._metrics = metrics
        self._drops = metrics.drops
        self._random_bytes = random_bytes
        self._encrypted_only = encrypted_only

    def _drop(self, reason: DropReason) -> list[Action]:
        self._drops[reason] += 1
        return []

    def channel_data_from_client(self, data: bytes, five_tuple: FiveTuple, now: float) -> list[Action]:
        """A ChannelData message from a client: relay its data to the channel's peer."""
        allocation = self._by_five_tuple.get(five_tuple)
        if allocation is None:
            return self._drop(DropReason.NO_ALLOCATION)
        if len(data) < 4:
            return self._drop(DropReason.MALFORMED)
        number, length = _CHANNEL_HEADER.unpack_from(data)
        binding = allocation.channels.get(number)
        if binding is None or binding.expires <= now:
            return self._drop(DropReason.NO_CHANNEL)
        if binding.permission.expires <= now:
            return self._drop(DropReason.NO_PERMISSION)
        if not 0 <= len(data) - 4 - length <= 3:
            return self._drop(DropReason.MALFORMED)
        payload = data[4 : 4 + length]
        if self._encrypted_only and (reason := binding.path.check(payload, True)) is not None:
            return self._drop(reason)
        bucket = allocation.bucket
        if bucket is not None and not bucket.take(length, now):
            return self._drop(DropReason.BANDWIDTH)
        metrics = self._metrics
        metrics.packets_to_peer += 1
        metrics.bytes_to_peer += length
        return [SendToPeer(allocation.relay, binding.peer, payload)]

    def send_indication(self, message: Message, five_tuple: FiveTuple, now: float) -> list[Action]:
        """A Send indication: relay its DATA to its XOR-PEER-ADDRESS if permitted."""
        allocation = self._by_five_tuple.get(five_tuple)
        if allocation is None or allocation.pending is not None:
            return self._drop(DropReason.NO_ALLOCATION)
        target, data = message.get(XorPeerAddress), message.get(Data)
        if target is None or data is None or message.unknown_required:
            return self._drop(DropReason.MALFORMED)
        if family_of(target.address) != host_family(allocation.relay[0]):
            return self._drop(DropReason.PEER_FAMILY_MISMATCH)
        host = host_text(target.address)
        permission = allocation.permissions.get(host)
        if permission is None or permission.expires <= now:
            allowed = self._policy.allows(target.address, target.port)
            return self._drop(DropReason.NO_PERMISSION if allowed else DropReason.PEER_DENIED)
        peer = (host, target.port)
        reason = self._refused(allocation, permission, peer, data.data, now, True)
        if reason is not None:
            return self._drop(reason)
        metrics = self._metrics
        metrics.packets_to_peer += 1
        metrics.bytes_to_peer += len(data.data)
        return [SendToPeer(allocation.relay, peer, data.data)]

    def from_peer(self, relay: Address, peer: Address, data: bytes, now: float) -> list[Action]:
        """A datagram a peer sent to a relayed address: ChannelData if the peer has a channel,
        else a Data indication if it has a permission, else dropped."""
        allocation = self._by_relay.get(relay)
        if allocation is None:
            return self._drop(DropReason.NO_ALLOCATION)
        binding = allocation.channels_by_peer.get(peer)
        if binding is not None and binding.expires > now and binding.permission.expires > now:
            if self._encrypted_only and (reason := binding.path.check(data, False)) is not None:
                return self._drop(reason)
            bucket = allocation.bucket
            if bucket is not None and not bucket.take(len(data), now):
                return self._drop(DropReason.BANDWIDTH)
            frame = binding.prefix + _LENGTH.pack(len(data)) + data
            if allocation.five_tuple.transport is not Transport.UDP:
                frame += _PADDING[len(frame) % 4]
            return self._to_client(allocation, frame, len(data))
        permission = allocation.permissions.get(peer[0])
        if permission is None or permission.expires <= now:
            allowed = self._policy.allows_host(peer[0], peer[1])
            return self._drop(DropReason.NO_PERMISSION if allowed else DropReason.PEER_DENIED)
        if len(data) > MAX_INDICATION_DATA:
            return self._drop(DropReason.TOO_LARGE)
        reason = self._refused(allocation, permission, peer, data, now, False)
        if reason is not None:
            return self._drop(reason)
        attributes = (XorPeerAddress(permission.ip, peer[1]), Data(data))
        indication = Message(Method.DATA, MessageClass.INDICATION, self._random_bytes(12), attributes)
        return self._to_client(allocation, encode_message(indication), len(data))

    def _to_client(self, allocation: Allocation, frame: bytes, size: int) -> list[Action]:
        metrics = self._metrics
        metrics.packets_to_client += 1
        metrics.bytes_to_client += size
        return [SendToClient(allocation.five_tuple, frame)]

    def _refused(
        self, allocation: Allocation, permission: Permission, peer: Address, payload: bytes, now: float, to_peer: bool
    ) -> DropReason | None:
        """The checks of the indication paths after the permission: port, gate, bandwidth."""
        if peer[1] == 0 or (permission.own and peer[1] not in self._policy.relay_ports):
            return DropReason.PEER_DENIED
        if self._encrypted_only:
            handshake = is_dtls_handshake(payload)
            path = allocation.path(peer, create=handshake)
            if path is None and handshake:
                self._metrics.media_paths_refused += 1
            reason = check_without_path(payload) if path is None else path.check(payload, to_peer)
            if reason is not None:
                return reason
        bucket = allocation.bucket
        if bucket is not None and not bucket.take(len(payload), now):
            return DropReason.BANDWIDTH
        return None
