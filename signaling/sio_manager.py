"""python-socketio's client managers, with what a server of thousands of connections needs.

- **Rooms per connection.** python-socketio's `BaseManager.basic_disconnect` finds a connection's rooms by
  copying and scanning the namespace's whole room table, and every connection is a room of its own: each
  disconnect costs O(connections), so 10,000 connections closing at once (a node restart, a network cut)
  cost O(n²) and keep the loop busy for tens of seconds. These managers keep the rooms of each connection,
  and a disconnect leaves exactly those.
- **Local delivery first** (`--redis`): python-socketio publishes every emit on Redis, also to a peer
  connected to this very node (every node then decodes and drops it). `emit_to_single` delivers to a room
  of one connection here when that connection is here, and publishes only otherwise.
- **No task per event** to a room of one connection (`_DirectDelivery`), and no search of every outgoing
  payload for bytes (`JsonPacket`).
- **Engine.IO over a WebSocket without a queue** (`_DirectSocket`): python-engineio puts every outgoing
  packet on a queue for a writer task, which takes it off with `wait_for` (a task and a timer per packet),
  and reads every incoming frame through another `wait_for`. Here a packet is written to the WebSocket
  at once and frames are read straight from it: 23 % fewer server instructions per join (5.60 → 4.30
  million, callgrind). Dead connections are still found by the ping monitor (`_EngineServer`): the
  socket sends Engine.IO's CLOSE and closes the WebSocket (python-engineio's own path meant to send
  that CLOSE, but its ping check refused it, and the connection ended at its queue's timeout instead).
  A connection that starts on long-polling and upgrades keeps python-engineio's own path.
- **orjson for Socket.IO's JSON** (`JsonPacket`): every message in and out is JSON; with the standard
  library's encoder (which escapes each CR/LF of an SDP and runs a Python layer per call) a join cost
  13 % more server instructions (6.43 → 5.58 million, callgrind, 300 joins with their negotiation).
  orjson is also strict: NaN, Infinity and lone surrogates are malformed input, refused like any other.
- **A cheap client monitor** (`SocketIOServer`): see `_EngineServer`.
- **No WebSocket compression** (`_UncompressedWebSocket`): every browser offers permessage-deflate and
  aiohttp accepts it by default. It would compress, in one deflate context per connection, relay
  credentials and ICE passwords beside text other people chose (names), the pattern of the CRIME and
  BREACH attacks that made TLS give up compression; and it costs each connection a compressor and a
  decompressor (about 120 KB more per connection, measured: 192 KB instead of 70 KB) and each message a
  deflate or inflate (about 11 % more server work per join). Signaling messages are small: sent as they are.
- **A bounded, blocking Redis pool**: redis-py's default pool refuses a command once 100 connections are
  busy ("Too many connections"), which a few hundred disconnects at once reach; a blocking pool makes
  them wait their turn instead (signaling/redis_membership.py's `redis_client` uses the same pool).

Everything here relies on python-socketio 5's `rooms` table (`rooms[namespace][room]` maps sid → eio sid)
and its `basic_*` methods, which the managers of python-socketio itself build upon, and on python-engineio
4's `AsyncSocket` (`queue`, `connected`, `upgraded`, `_websocket_handler`), its `sockets` table and its
aiohttp driver table (`_async`). tests/unit/test_sio_manager.py checks that these still apply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from typing import Any

import engineio
import orjson
import redis.asyncio as aioredis
import socketio
from aiohttp import WSMsgType, web
from engineio import async_socket as eio_async_socket
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet
from engineio.async_drivers import aiohttp as eio_aiohttp
from socketio import packet as sio_packet

log = logging.getLogger("kijkmee.signaling")

REDIS_MAX_CONNECTIONS = 64
"""Redis connections of one node's pool (the pub/sub listener holds one of them)."""
REDIS_POOL_TIMEOUT = 20.0
"""Seconds a command waits for a free connection before it fails (Redis is then overloaded or away)."""


class _UncompressedWebSocket(eio_aiohttp.WebSocket):  # type: ignore[misc]
    """python-engineio's aiohttp WebSocket, answering the upgrade without permessage-deflate (see the top
    of this file). Otherwise the same as python-engineio's own `WebSocket.__call__`."""

    async def __call__(self, environ: dict[str, Any]) -> web.WebSocketResponse:
        request = environ["aiohttp.request"]
        self._sock = web.WebSocketResponse(max_msg_size=self.server.max_http_buffer_size, compress=False)
        await self._sock.prepare(request)
        self.environ = environ
        await self.handler(self)
        return self._sock


class _DirectSocket(eio_async_socket.AsyncSocket):  # type: ignore[misc]
    """python-engineio's socket, which on a WebSocket (opened as one, not upgraded from long-polling)
    writes each packet at once instead of queueing it for a writer task (see the top of this file)."""

    connected: bool  # python-engineio's own attributes, typed for mypy
    upgraded: bool
    queue: asyncio.Queue[Any]
    server: Any
    _ws: web.WebSocketResponse | None = None  # set while packets go straight to the WebSocket
    _closing_ws: asyncio.Task[bool] | None = None

    async def send(self, pkt: eio_packet.Packet) -> None:
        ws = self._ws
        if ws is None:
            await super().send(pkt)
            return
        # A socket whose pong is overdue is closed here (check_ping_timeout); its own CLOSE still goes out.
        if pkt.packet_type != eio_packet.CLOSE and not await self.check_ping_timeout():
            return
        try:
            await ws.send_str(pkt.encode())  # an uncompressed frame is written before any await
        except Exception:  # the connection is going away; the reading loop ends it
            return

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        await super().close(wait=wait, abort=abort, reason=reason)
        ws = self._ws
        if ws is not None and self._closing_ws is None:
            # python-engineio's writer task closed the WebSocket once its queue ran dry; here nothing
            # else would (the reading loop waits without a timeout): close it, which ends that loop.
            self._closing_ws = asyncio.ensure_future(ws.close())

    async def _websocket_handler(self, ws: _UncompressedWebSocket) -> None:
        if self.connected:  # an upgrade from long-polling: python-engineio's own way
            await super()._websocket_handler(ws)
            return
        self.connected = self.upgraded = True
        sock = ws._sock
        assert sock is not None
        # What was sent before the WebSocket was ready (Engine.IO's OPEN) goes first, then the rest
        # directly; no await between the last look at the queue and switching over.
        while not self.queue.empty():
            queued = self.queue.get_nowait()
            self.queue.task_done()
            if queued is not None:
                await sock.send_str(queued.encode())
        self._ws = sock
        try:
            while True:
                message = await sock.receive()
                if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break  # closed, closing or an error
                if len(message.data) > self.server.max_http_buffer_size:
                    break
                try:
                    await self.receive(eio_packet.Packet(encoded_packet=message.data))
                except eio_exceptions.UnknownPacketError:
                    pass
                except eio_exceptions.SocketIsClosedError:
                    break
                except Exception:  # as python-engineio's own loop: log, keep the connection
                    self.server.logger.exception("Unknown receive error")
        except asyncio.CancelledError:  # as python-engineio's own loop: end this connection cleanly
            pass
        finally:
            self._ws = None
        await sock.close()
        await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)


class _Sockets(dict[str, Any]):
    """python-engineio's table of sockets, which makes each new socket a `_DirectSocket`. (It creates
    `AsyncSocket` itself in `_handle_connect` and stores it here before using it.)"""

    def __setitem__(self, sid: str, socket: Any) -> None:
        if type(socket) is eio_async_socket.AsyncSocket:
            socket.__class__ = _DirectSocket
        super().__setitem__(sid, socket)


class _EngineServer(engineio.AsyncServer):  # type: ignore[misc]
    """python-engineio's server with uncompressed WebSockets (on aiohttp) and a cheaper client monitor.

    The monitor: python-engineio's own `_service_task` checks one socket's pong deadline at a time and
    waits (a task and a timer) between each two, spreading a pass over `ping_timeout`: 2,000 waits a
    second at 10,000 connections, and beyond 5,000 connections waits shorter than uvloop's 1 ms timer
    resolution, which then do not wait at all: the monitor spun, a whole core at 10,000 idle connections.
    This one checks every socket once a second, yielding every 1,000."""

    _async: dict[str, Any]  # python-engineio's table of its async driver (websocket, create_route, ...)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.async_mode == "aiohttp":  # this server's own copy of the driver table
            self._async = {**self._async, "websocket": _UncompressedWebSocket}
            self.sockets: dict[str, Any] = _Sockets()

    async def _service_task(self) -> None:
        self.service_task_event = self.create_event()
        period = min(1.0, self.ping_timeout / 5)
        while not self.service_task_event.is_set():
            try:
                await asyncio.wait_for(self.service_task_event.wait(), timeout=period)
                break
            except TimeoutError:
                pass
            try:
                for index, socket in enumerate(list(self.sockets.values())):
                    if socket.closed:
                        self.sockets.pop(socket.sid, None)
                    elif not socket.closing:
                        await socket.check_ping_timeout()  # closes it when its pong is overdue
                    if index % 1000 == 999:
                        await asyncio.sleep(0)
            except asyncio.CancelledError:
                raise
            except Exception:  # as python-engineio's own: log, keep monitoring
                self.logger.exception("service task exception")


class SocketIOServer(socketio.AsyncServer):  # type: ignore[misc]
    """python-socketio's server on `_EngineServer`, which drops a frame that is not a Socket.IO packet of
    strict JSON: one warning per connection, without the frame (python-socketio logged an error with a
    traceback for every such frame)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._warned_malformed: set[str] = set()

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return _EngineServer

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        try:
            await super()._handle_eio_message(eio_sid, data)
        except ValueError as exc:  # the packet or its JSON; a handler's own errors are answered there
            if eio_sid not in self._warned_malformed:
                self._warned_malformed.add(eio_sid)
                log.warning("dropped a malformed Socket.IO frame", extra={"error": type(exc).__name__})

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any = None) -> None:
        self._warned_malformed.discard(eio_sid)
        await super()._handle_eio_disconnect(eio_sid, reason)


class _OrJson:
    """The `dumps`/`loads` pair python-socketio's packets call, done by orjson (compact, UTF-8 text)."""

    @staticmethod
    def dumps(obj: Any, **_options: Any) -> str:  # python-socketio passes separators=(',', ':'): compact anyway
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(text: str | bytes) -> Any:
        return orjson.loads(text)  # orjson.JSONDecodeError is a json.JSONDecodeError (a ValueError)


class JsonPacket(sio_packet.Packet):  # type: ignore[misc]
    """Socket.IO packets whose data is never binary: we send only JSON (no bytes), so python-socketio's
    recursive search of every outgoing payload for bytes is skipped. Binary packets from a client are
    still decoded (and refused by the handlers, which take one JSON object). JSON by orjson."""

    uses_binary_events = False
    json = _OrJson


def redis_pool(url: str, **options: Any) -> aioredis.BlockingConnectionPool:
    """A pool that makes commands wait for a free connection instead of failing when all are busy."""
    return aioredis.BlockingConnectionPool.from_url(
        url, max_connections=REDIS_MAX_CONNECTIONS, timeout=REDIS_POOL_TIMEOUT, **options
    )


class _RoomsPerConnection:
    """Mixin for a python-socketio manager: the rooms of each (namespace, sid), so leaving them all is
    O(rooms of that connection). Must come before the manager class in the bases."""

    rooms: dict[str | None, dict[Hashable, Any]]
    callbacks: dict[str, Any]
    pending_connect: dict[str | None, list[str]]
    pending_disconnect: dict[str | None, list[str]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rooms_of: dict[tuple[str | None, str], set[Hashable]] = {}

    def basic_enter_room(self, sid: str, namespace: str | None, room: Hashable, eio_sid: str | None = None) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)  # type: ignore[misc]
        self._rooms_of.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid: str, namespace: str | None, room: Hashable) -> None:
        super().basic_leave_room(sid, namespace, room)  # type: ignore[misc]
        rooms = self._rooms_of.get((namespace, sid))
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._rooms_of[(namespace, sid)]

    def basic_disconnect(self, sid: str, namespace: str | None, **kwargs: Any) -> None:
        """BaseManager.basic_disconnect without the scan of every room."""
        if namespace not in self.rooms:
            return
        for room in list(self._rooms_of.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            waiting = pending.get(namespace)
            if waiting is not None and sid in waiting:
                waiting.remove(sid)
                if not waiting:
                    del pending[namespace]

    def get_rooms(self, sid: str, namespace: str | None) -> list[Hashable]:
        return [room for room in self._rooms_of.get((namespace, sid), ()) if room is not None]

    def connected_member(self, room: str, namespace: str = "/") -> str | None:
        """The sid of a room's only member when it is connected to this node (not leaving), else None."""
        members = self.rooms.get(namespace, {}).get(room)
        if members is None or len(members) != 1:
            return None
        sid = next(iter(members))
        return sid if self.is_connected(sid, namespace) else None  # type: ignore[attr-defined]


class _DirectDelivery(socketio.AsyncManager):  # type: ignore[misc]
    """AsyncManager.emit, without a task per recipient when a room has one member. python-socketio's
    emit creates a task per recipient and waits for it: at least one turn of the event loop per event,
    which under load made the Redis listener (one message at a time) fall seconds behind. Handing the
    packet to the connection's Engine.IO queue does not wait for anything."""

    async def emit(self, event: str, data: Any, namespace: str, room: Any = None, skip_sid: Any = None,
                   callback: Any = None, to: Any = None, **kwargs: Any) -> None:
        room = to or room
        members = self.rooms.get(namespace, {}).get(room) if isinstance(room, str) else None
        if members is None or len(members) != 1 or callback is not None or skip_sid is not None:
            await super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs)
            return
        if isinstance(data, tuple):
            data = list(data)
        elif data is not None:
            data = [data]
        else:
            data = []
        encoded = self.server.packet_class(sio_packet.EVENT, namespace=namespace, data=[event, *data]).encode()
        eio_sid = next(iter(members.values()))
        for part in encoded if isinstance(encoded, list) else [encoded]:
            await self.server._send_eio_packet(eio_sid, eio_packet.Packet(eio_packet.MESSAGE, part))


class LocalManager(_RoomsPerConnection, _DirectDelivery):
    """One node: every connection is here."""

    async def emit_to_single(self, event: str, data: Any, room: str, namespace: str = "/") -> None:
        """Emit to a room of at most one connection (on this node, or none)."""
        await self.server.emit(event, data, to=room, namespace=namespace)


class RedisManager(_RoomsPerConnection, socketio.AsyncRedisManager, _DirectDelivery):  # type: ignore[misc]
    """Several nodes on one Redis: events to a connection on another node go through Redis pub/sub."""

    def _redis_connect(self) -> None:
        # AsyncRedisManager's own, with a bounded blocking pool (redis:// and rediss:// URLs; sentinel URLs
        # keep python-socketio's default).
        if "+sentinel" in self.redis_url.split("://", 1)[0]:
            super()._redis_connect()
            return
        self.redis = aioredis.Redis.from_pool(redis_pool(self.redis_url, **self.redis_options))
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.connected = True

    async def emit_to_single(self, event: str, data: Any, room: str, namespace: str = "/") -> None:
        """Emit to a room of at most one connection, on any node: straight to it when it is connected
        here, else through Redis as python-socketio does."""
        await self.server.emit(event, data, to=room, namespace=namespace,
                               ignore_queue=self.connected_member(room, namespace) is not None)
