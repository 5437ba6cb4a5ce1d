"""The asyncio side of the relay: sockets in, `RelayServer` calls, actions out. No TURN logic here.

UDP sockets (listeners and relayed ports) are read with `loop.add_reader` and drained with
non-blocking `recvfrom` until empty: stock asyncio datagram transports call `recvfrom(256 KiB)` per
datagram, which costs an mmap/munmap each time and several times the CPU of the TURN logic itself.
TCP and TLS clients are asyncio protocols that cut the stream into frames with `StreamFramer`.

When the C extension `turn_relay._fastpath` is built (and not switched off), it owns the UDP sockets
instead: one epoll set, drained with recvmmsg, whose ChannelData on bound channels it forwards itself
(sendmmsg) and whose every other datagram it hands, in order, to `_client_slow` / `_peer_slow`, i.e. to
the same `RelayServer` calls. After each such call the node copies the allocation's channels (numbers,
peers, expiries, the gate's keyed flag, the shared bandwidth bucket) to the engine; after each timer
tick the engine forgets lapsed channels; closing a relayed socket forgets its allocation. The core
stays the authority: the engine only ever forwards what the core would forward, and counts into the
core's metrics and this node's counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field

from turn_relay.actions import Action, CloseRelay, OpenRelay, SendToClient, SendToPeer
from turn_relay.addresses import Address, FiveTuple, Transport, canonical_host
from turn_relay.allocation import Allocation
from turn_relay.metrics import DropReason
from turn_relay.server import RelayServer
from turn_relay.stun import StreamFramer, StunDecodeError

try:
    from turn_relay import _fastpath
except ImportError:  # built without a C compiler, or not on Linux: the pure-Python path does everything
    _fastpath = None  # type: ignore[assignment]

FAST_PATH_AVAILABLE = _fastpath is not None
"""True when the C fast path (``turn_relay/_fastpath.c``) is built."""

MAX_DATAGRAM = 65536
DRAIN_BATCH = 256
"""Datagrams read per readiness callback before other sockets get their turn."""
STREAM_WRITE_CAP = 256 * 1024
"""Bytes queued for one TCP/TLS client before further data to it is dropped."""
STREAM_FRAME_CAP = 4 * 1024
"""Largest STUN/ChannelData frame accepted over TCP/TLS (a media packet is ~1.2 KiB)."""
TICK = 1.0
"""Seconds between timer checks (lifetimes are whole seconds)."""
TLS_HANDSHAKE_TIMEOUT = 10.0
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)  # Linux values; Python names them only on some builds
IP_PMTUDISC_DO = getattr(socket, "IP_PMTUDISC_DO", 2)


@dataclass
class NodeCounters:
    """I/O-level counters, next to the core's `RelayMetrics`."""

    datagrams_in: int = 0
    datagrams_out: int = 0
    send_errors: int = 0
    stream_connections: int = 0
    stream_bad_frames: int = 0
    stream_overflow_drops: int = 0
    relay_ports_open: int = 0
    by_transport: dict[str, int] = field(default_factory=lambda: {"udp": 0, "tcp": 0, "tls": 0})


def _udp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _address(raw: tuple[object, ...]) -> Address:
    return (canonical_host(str(raw[0])), int(str(raw[1])))


class StreamClient(asyncio.Protocol):
    """One TCP or TLS client connection."""

    def __init__(self, node: RelayNode, transport_kind: Transport, server_address: Address) -> None:
        self.node = node
        self.kind = transport_kind
        self.server_address = server_address
        self.framer = StreamFramer(STREAM_FRAME_CAP, node.server.config.legacy_channels)
        self.transport: asyncio.Transport | None = None
        self.five_tuple: FiveTuple | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport by asyncio's contract, but not always of asyncio's class: uvloop's TLS
        # transport is not an asyncio.Transport subclass (an isinstance check refused every TLS client).
        stream = typing.cast(asyncio.Transport, transport)
        self.transport = stream
        peer = stream.get_extra_info("peername")
        self.five_tuple = FiveTuple(self.kind, _address(peer), self.server_address)
        self.node.streams[self.five_tuple] = stream
        self.node.counters.stream_connections += 1

    def data_received(self, data: bytes) -> None:
        node, five_tuple = self.node, self.five_tuple
        if five_tuple is None:  # pragma: no cover
            return
        try:
            frames = self.framer.feed(data)
        except StunDecodeError:
            node.counters.stream_bad_frames += 1
            if self.transport is not None:
                self.transport.abort()
            return
        now = node.clock()
        for frame in frames:
            node.execute(node.server.handle_client_data(frame, five_tuple, now))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.five_tuple is not None:
            self.node.streams.pop(self.five_tuple, None)
            self.node.execute(self.node.server.connection_lost(self.five_tuple, self.node.clock()))


class RelayNode:
    """Runs one `RelayServer` on real sockets in the running event loop."""

    def __init__(
        self, server: RelayServer, clock: Callable[[], float] = time.time, fast_path: bool | None = None
    ) -> None:
        """``fast_path``: forward ChannelData of bound channels in C; None: when it is built. Set it
        before the server has allocations (their bandwidth buckets must be the engine's)."""
        self.server = server
        self.clock = clock
        self.counters = NodeCounters()
        self.loop = asyncio.get_running_loop()
        self.fast: _fastpath.Engine | None = None
        """The C data plane, or None on the pure-Python path."""
        if fast_path is None:
            fast_path = FAST_PATH_AVAILABLE
        if fast_path:
            self.fast = self._start_fast_path()
        self.listeners: dict[Address, socket.socket] = {}
        self.relays: dict[Address, socket.socket] = {}
        self.streams: dict[FiveTuple, asyncio.Transport] = {}
        self.bind_hosts: dict[str, str] = {}
        """Advertised relay host -> local address to bind (behind NAT: external IP -> relay IP)."""
        self._servers: list[asyncio.Server] = []
        self._ticker: asyncio.TimerHandle | None = self.loop.call_later(TICK, self._tick)
        self._dispatch: dict[type, Callable[[Action], None]] = {
            SendToClient: self._send_to_client,  # type: ignore[dict-item]
            SendToPeer: self._send_to_peer,  # type: ignore[dict-item]
            OpenRelay: self._open_relay,  # type: ignore[dict-item]
            CloseRelay: self._close_relay,  # type: ignore[dict-item]
        }

    @property
    def draining(self) -> bool:
        """True once `drain()` was called: no new allocations, existing ones run on."""
        return self.server.draining

    def drain(self) -> None:
        """No new allocations; existing ones (and their fast-path channels) run on until they end."""
        self.server.draining = True

    def _start_fast_path(self) -> _fastpath.Engine:
        if _fastpath is None:
            raise RuntimeError("the fast path is not built (turn_relay/_fastpath.c needs a C compiler, on Linux)")
        server = self.server
        engine = _fastpath.Engine(
            self._client_slow,
            self._peer_slow,
            self.clock,
            server.metrics,
            self.counters,
            (DropReason.NOT_RFC7983, DropReason.RTP_BEFORE_DTLS, DropReason.BANDWIDTH),
            not server.config.allow_unencrypted,
            0x80 if server.config.legacy_channels else 0x50,
        )
        server.bucket_factory = _fastpath.TokenBucket
        self.loop.add_reader(engine.fileno(), engine.poll)
        return engine

    # -- listeners ------------------------------------------------------------------------------

    def listen_udp(self, host: str, port: int) -> Address:
        sock = _udp_socket(host, port)
        address = _address(sock.getsockname())
        self.listeners[address] = sock
        if self.fast is not None:
            self.fast.add_listener(sock.fileno(), address)
        else:
            self.loop.add_reader(sock.fileno(), self._client_datagrams, sock, address)
        return address

    def close_udp(self, address: Address) -> None:
        """Stop one UDP listener (used when its port number turns out to be taken for TCP)."""
        sock = self.listeners.pop(address, None)
        if sock is not None:
            self._unwatch(sock)
            sock.close()

    async def listen_stream(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> Address:
        kind = Transport.TLS if tls is not None else Transport.TCP
        holder: list[Address] = []
        server = await self.loop.create_server(
            lambda: StreamClient(self, kind, holder[0]),
            host,
            port,
            ssl=tls,
            ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if tls is not None else None,
            reuse_address=True,
        )
        holder.append(_address(server.sockets[0].getsockname()))
        self._servers.append(server)
        return holder[0]

    def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for server in self._servers:
            server.close()
        for transport in list(self.streams.values()):
            transport.abort()
        for sock in [*self.listeners.values(), *self.relays.values()]:
            self._unwatch(sock)
            sock.close()
        self.listeners.clear()
        self.relays.clear()
        if self.fast is not None:
            with contextlib.suppress(OSError, ValueError):
                self.loop.remove_reader(self.fast.fileno())
            self.fast.close()

    def _unwatch(self, sock: socket.socket) -> None:
        """Stop reading ``sock`` (from the loop or the fast path), before it is closed."""
        if self.fast is not None:
            self.fast.remove_socket(sock.fileno())
        else:
            with contextlib.suppress(OSError, ValueError):
                self.loop.remove_reader(sock.fileno())

    # -- input ----------------------------------------------------------------------------------

    def _client_datagrams(self, sock: socket.socket, server_address: Address) -> None:
        handle, execute, now = self.server.handle_client_data, self.execute, self.clock()
        udp = Transport.UDP
        for _ in range(DRAIN_BATCH):
            try:
                data, raw = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. an ICMP error reported on the socket
                self.counters.send_errors += 1
                continue
            self.counters.datagrams_in += 1
            execute(handle(data, FiveTuple(udp, (raw[0], raw[1]), server_address), now))

    def _peer_datagrams(self, sock: socket.socket, relay: Address) -> None:
        handle, execute, now = self.server.handle_peer_data, self.execute, self.clock()
        for _ in range(DRAIN_BATCH):
            try:
                data, raw = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.counters.send_errors += 1
                continue
            self.counters.datagrams_in += 1
            execute(handle(relay, (raw[0], raw[1]), data, now))

    def _tick(self) -> None:
        self.run_timers()
        self._ticker = self.loop.call_later(TICK, self._tick)

    def run_timers(self) -> None:
        """Expire what is due now (the tick calls it every second; tests with their own clock too)."""
        now = self.clock()
        self.execute(self.server.handle_timer(now))
        if self.fast is not None:
            self.fast.expire(now)

    # -- the fast path's hand-over ----------------------------------------------------------------

    def _client_slow(self, data: bytes, host: str, port: int, server_address: Address, now: float) -> None:
        """A datagram the fast path leaves to the core: what `_client_datagrams` does with it."""
        five_tuple = FiveTuple(Transport.UDP, (host, port), server_address)
        self.execute(self.server.handle_client_data(data, five_tuple, now))
        self._sync(self.server.allocations.by_five_tuple.get(five_tuple))

    def _peer_slow(self, data: bytes, host: str, port: int, relay: Address, now: float) -> None:
        """A peer datagram the fast path leaves to the core: what `_peer_datagrams` does with it."""
        self.execute(self.server.handle_peer_data(relay, (host, port), data, now))
        self._sync(self.server.allocations.by_relay.get(relay))

    def _sync(self, allocation: Allocation | None) -> None:
        """Tell the engine the allocation's channels as the core has them now (replacing what it knew)."""
        fast = self.fast
        if fast is None or allocation is None or allocation.pending is not None:
            return
        five_tuple = allocation.five_tuple
        relay, listener = self.relays.get(allocation.relay), self.listeners.get(five_tuple.server)
        if five_tuple.transport is not Transport.UDP or relay is None or listener is None:
            return  # TCP/TLS clients: the core relays every packet
        bucket = allocation.bucket
        if bucket is not None and not isinstance(bucket, _fastpath.TokenBucket):
            return  # made before the fast path started: its tokens live in Python, so does its traffic
        channels = [
            (binding.number, binding.peer[0], binding.peer[1], binding.expires, binding.permission.expires,
             binding.path.keyed)
            for binding in allocation.channels.values()
        ]
        fast.set_allocation(relay.fileno(), listener.fileno(), *five_tuple.client, bucket, channels)

    # -- output ---------------------------------------------------------------------------------

    def execute(self, actions: list[Action]) -> None:
        dispatch = self._dispatch
        for action in actions:
            dispatch[type(action)](action)

    def _send_to_client(self, action: SendToClient) -> None:
        five_tuple = action.five_tuple
        if five_tuple.transport is Transport.UDP:
            sock = self.listeners.get(five_tuple.server)
            if sock is not None:
                self._sendto(sock, action.data, five_tuple.client)
            return
        transport = self.streams.get(five_tuple)
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > STREAM_WRITE_CAP:
            self.counters.stream_overflow_drops += 1
            return
        transport.write(action.data)

    def _send_to_peer(self, action: SendToPeer) -> None:
        sock = self.relays.get(action.relay)
        if sock is not None:
            self._sendto(sock, action.data, action.peer)

    def _sendto(self, sock: socket.socket, data: bytes, address: Address) -> None:
        try:
            sock.sendto(data, address)
            self.counters.datagrams_out += 1
        except OSError:  # full buffer (BlockingIOError), unreachable, ...: UDP may drop, so do we
            self.counters.send_errors += 1

    def _open_relay(self, action: OpenRelay) -> None:
        now = self.clock()
        try:
            host, port = action.relay
            sock = _udp_socket(self.bind_hosts.get(host, host), port)
            if action.dont_fragment and sock.family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        except OSError as exc:
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
                self.counters.send_errors += 1
            self.execute(self.server.relay_failed(action.allocation_id, now))
            return
        self.relays[action.relay] = sock
        self.counters.relay_ports_open += 1
        if self.fast is not None:
            self.fast.add_relay(sock.fileno(), action.relay)
        else:
            self.loop.add_reader(sock.fileno(), self._peer_datagrams, sock, action.relay)
        self.execute(self.server.relay_opened(action.allocation_id, now))

    def _close_relay(self, action: CloseRelay) -> None:
        sock = self.relays.pop(action.relay, None)
        if sock is not None:
            self.counters.relay_ports_open -= 1
            self._unwatch(sock)  # the fast path forgets the allocation's channels with it
            sock.close()
