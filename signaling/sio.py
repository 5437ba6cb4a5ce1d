"""Socket.IO handlers: feed client events into the room registry and the store, send results out.

The protocol is in docs/signaling-protocol.md. Every handler goes through `_dispatch`, the one place
where a refusal becomes an ack and a `signal-error` event. SDP and candidates pass through memory
only: they are checked, handed to one peer of the sender's room and forgotten.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import socketio

from metadata_store import MetadataStore
from signaling.errors import (
    AlreadyJoined,
    BadRequest,
    NotJoined,
    RateLimited,
    RoomExpired,
    SignalingError,
    UnknownEvent,
)
from signaling.ratelimit import TokenBucket
from signaling.rooms import Participant, RoomRegistry
from signaling.settings import SignalingSettings
from signaling.validation import (
    is_relay_candidate,
    parse_candidate,
    parse_description,
    parse_join,
    parse_report,
    relay_only_sdp,
)

log = logging.getLogger("kijkmee.signaling")

Reply = dict[str, Any]


@dataclass
class HeldSeat:
    """A seat kept after an unexpected disconnect, for the same person to take back with its token."""

    peer_id: str
    room_id: str
    name: str | None
    session_id: int | None
    relay_only: bool
    timer: asyncio.TimerHandle | None = None


@dataclass
class Connection:
    sid: str
    ip: str
    bucket: TokenBucket
    peer_id: str | None = None
    room_id: str | None = None
    session_id: int | None = None
    relay_only: bool = False
    """In a relay-only room: only relay candidates reach the others."""
    rejoin_token: str | None = None
    """Handed out on join: lets this person take the seat back after a reload or network switch."""
    closed: bool = False


class SignalingService:
    def __init__(
        self,
        sio: socketio.AsyncServer,
        rooms: RoomRegistry,
        store: MetadataStore,
        settings: SignalingSettings,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sio = sio
        self.rooms = rooms
        self.store = store
        self.settings = settings
        self._monotonic = monotonic
        self._connections: dict[str, Connection] = {}
        self._sid_of_peer: dict[str, str] = {}
        self._session_of_peer: dict[str, int] = {}
        self._held: dict[str, HeldSeat] = {}
        self._expiring: set[asyncio.Future[None]] = set()
        """Rejoin token -> seat kept for a grace period after an unexpected disconnect."""
        self._handlers: dict[str, Callable[[Connection, Any], Awaitable[Reply]]] = {
            "join": self._join,
            "offer": self._description("offer"),
            "answer": self._description("answer"),
            "candidate": self._candidate,
            "leave": self._leave,
            "report": self._report,
        }
        sio.on("connect", self._on_connect)
        sio.on("disconnect", self._on_disconnect)
        sio.on("*", self._on_event)

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def disconnect_all(self) -> None:
        """On shutdown: close every connection so long-polling requests end now, not at the next ping."""
        for sid in list(self._connections):
            await self.sio.disconnect(sid)

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        request = environ.get("aiohttp.request")
        ip = (request.remote if request is not None else None) or "unknown"
        bucket = TokenBucket(self.settings.message_rate, self.settings.message_burst, self._monotonic())
        self._connections[sid] = Connection(sid=sid, ip=ip, bucket=bucket)

    async def _on_disconnect(self, sid: str, reason: Any = None) -> None:
        connection = self._connections.pop(sid, None)
        if connection is None:
            return
        connection.closed = True
        grace = self.settings.seat_grace.total_seconds()
        if connection.peer_id is None or connection.rejoin_token is None or grace <= 0:
            await self._depart(connection)
            return
        # Not a goodbye (that is `leave`): a reload, a network switch, a phone going to sleep. Keep the
        # seat and the session row for the grace period; the others see the person as away meanwhile.
        held = self.rooms.participant(connection.peer_id)
        seat = HeldSeat(connection.peer_id, connection.room_id or "", held.name if held else None,
                        connection.session_id, connection.relay_only)
        token = connection.rejoin_token
        self._held[token] = seat
        self._sid_of_peer.pop(seat.peer_id, None)
        seat.timer = asyncio.get_running_loop().call_later(grace, self._expire_later, token)
        for other in self.rooms.members(seat.room_id):
            if other.id != seat.peer_id:
                await self._emit_to_peer(other.id, "peer-away", {"id": seat.peer_id})

    def _expire_later(self, token: str) -> None:
        task = asyncio.ensure_future(self._expire(token))
        self._expiring.add(task)  # keep a reference until it is done
        task.add_done_callback(self._expiring.discard)

    async def _expire(self, token: str) -> None:
        """The grace period ended without a rejoin: the seat is freed as if the person had left."""
        seat = self._held.pop(token, None)
        if seat is None:
            return
        try:
            await self._free_seat(seat.peer_id, seat.session_id)
        except Exception as exc:  # a timer callback: log, never raise into the loop
            log.error("freeing a held seat failed", extra={"error": type(exc).__name__})

    async def release_held_seats(self) -> None:
        """On shutdown: free every held seat now, closing its session row."""
        for token in list(self._held):
            seat = self._held.get(token)
            if seat is not None and seat.timer is not None:
                seat.timer.cancel()
            await self._expire(token)

    async def _on_event(self, event: str, sid: str, *args: Any) -> Reply:
        connection = self._connections.get(sid)
        if connection is None:  # pragma: no cover - socket.io only routes events of connected sids
            return {"ok": False, "error": "not-joined", "message": NotJoined.message}
        try:
            if not connection.bucket.allow(self._monotonic()):
                raise RateLimited()
            handler = self._handlers.get(event)
            if handler is None:
                raise UnknownEvent()
            if len(args) > 1:
                raise BadRequest("Send one object per message.")
            reply = await handler(connection, args[0] if args else None)
            return {"ok": True, **reply}
        except SignalingError as refusal:
            await self.sio.emit(
                "signal-error", {"error": refusal.code, "event": event[:32], "message": refusal.message}, to=sid
            )
            return {"ok": False, "error": refusal.code, "message": refusal.message}
        except Exception as exc:
            # Type and place only: an exception's text (a database error, say) can quote the data.
            frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
            where = f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}" if frame else "?"
            log.error("signaling handler failed", extra={"event": event[:32], "error": type(exc).__name__,
                                                         "where": where})
            message = "Something went wrong on the server."
            await self.sio.emit("signal-error", {"error": "internal", "event": event[:32], "message": message}, to=sid)
            return {"ok": False, "error": "internal", "message": message}

    async def _join(self, connection: Connection, payload: Any) -> Reply:
        request = parse_join(payload)
        if connection.peer_id is not None:
            raise AlreadyJoined()
        if request.rejoin is not None:
            seat = self._held.get(request.rejoin)
            if seat is not None and seat.room_id == request.room:
                return await self._take_back(connection, request.rejoin, seat)
        now = self.settings.clock()
        room = await self.store.get_room(request.room)
        if room is None or room.expires_at <= now:
            raise RoomExpired()
        if connection.closed or connection.peer_id is not None:  # changed while we waited for the store
            raise AlreadyJoined()
        participant = Participant(id=secrets.token_urlsafe(12), name=request.name)
        admission = self.rooms.join(request.room, participant, room.options.capacity)  # atomic: no await inside
        connection.relay_only = room.options.relay_only
        connection.peer_id, connection.room_id = participant.id, request.room
        self._sid_of_peer[participant.id] = connection.sid
        try:
            connection.session_id = await self.store.open_session(
                request.room, connection.ip, request.name, now, phone=request.phone, email=request.email
            )
        except Exception:
            await self._depart(connection)
            raise
        if connection.closed:  # disconnected while the row was written
            await self.store.close_session(connection.session_id, self.settings.clock())
            raise NotJoined()
        self._session_of_peer[participant.id] = connection.session_id
        together = [self._session_of_peer[p.id] for p in admission.others if p.id in self._session_of_peer]
        try:  # telemetry only: a failure here must not undo a join
            await self.store.note_participants([*together, connection.session_id], len(admission.others) + 1)
        except Exception as exc:
            log.warning("could not note the call size", extra={"error": type(exc).__name__})
        for other in admission.others:
            await self._emit_to_peer(other.id, "peer-joined", {"id": participant.id, "name": participant.name})
        connection.rejoin_token = secrets.token_urlsafe(24)
        return {
            "self": participant.id,
            "peers": [{"id": p.id, "name": p.name} for p in admission.others],
            "iceServers": self.settings.ice_servers(participant.id),
            "iceTransportPolicy": "relay" if room.options.relay_only else self.settings.ice_transport_policy,
            "rejoinToken": connection.rejoin_token,
        }

    async def _take_back(self, connection: Connection, token: str, seat: HeldSeat) -> Reply:
        """The same person is back within the grace period: same seat, same peer id, same session row.
        The others hear `peer-back` and negotiate afresh with this peer (its old connection is gone)."""
        del self._held[token]
        if seat.timer is not None:
            seat.timer.cancel()
        connection.peer_id, connection.room_id, connection.session_id = seat.peer_id, seat.room_id, seat.session_id
        connection.relay_only = seat.relay_only
        connection.rejoin_token = secrets.token_urlsafe(24)  # a token works once
        self._sid_of_peer[seat.peer_id] = connection.sid
        others = [p for p in self.rooms.members(seat.room_id) if p.id != seat.peer_id]
        for other in others:
            await self._emit_to_peer(other.id, "peer-back", {"id": seat.peer_id, "name": seat.name})
        return {
            "self": seat.peer_id,
            "peers": [{"id": p.id, "name": p.name} for p in others],
            "iceServers": self.settings.ice_servers(seat.peer_id),
            "iceTransportPolicy": "relay" if seat.relay_only else self.settings.ice_transport_policy,
            "rejoinToken": connection.rejoin_token,
            "rejoined": True,
        }

    def _description(self, kind: str) -> Callable[[Connection, Any], Awaitable[Reply]]:
        async def forward(connection: Connection, payload: Any) -> Reply:
            sender = self._require_joined(connection)
            message = parse_description(payload)
            self.rooms.check_can_signal(sender, message.to)
            sdp = relay_only_sdp(message.sdp) if connection.relay_only else message.sdp
            await self._emit_to_peer(message.to, kind, {"from": sender, "sdp": sdp})
            return {}

        return forward

    async def _candidate(self, connection: Connection, payload: Any) -> Reply:
        sender = self._require_joined(connection)
        message = parse_candidate(payload)
        self.rooms.check_can_signal(sender, message.to)
        if connection.relay_only and message.candidate is not None \
                and not is_relay_candidate(str(message.candidate.get("candidate") or "")):
            return {"dropped": True}  # not a relay candidate: it would show this person's address
        await self._emit_to_peer(message.to, "candidate", {"from": sender, "candidate": message.candidate})
        return {}

    async def _report(self, connection: Connection, payload: Any) -> Reply:
        self._require_joined(connection)
        report = parse_report(payload)
        if connection.session_id is not None:
            await self.store.report_session(connection.session_id, report.route, report.setup_ms)
        return {}

    async def _leave(self, connection: Connection, payload: Any) -> Reply:
        self._require_joined(connection)
        await self._depart(connection)
        return {}

    def _require_joined(self, connection: Connection) -> str:
        if connection.peer_id is None:
            raise NotJoined()
        return connection.peer_id

    async def _depart(self, connection: Connection) -> None:
        """The connection's person leaves: its seat is freed."""
        peer_id, session_id = connection.peer_id, connection.session_id
        connection.peer_id = connection.room_id = connection.session_id = None
        if peer_id is not None:
            await self._free_seat(peer_id, session_id)

    async def _free_seat(self, peer_id: str, session_id: int | None) -> None:
        """Free the seat, tell the others, close the session row, keep the link alive for a while."""
        self._sid_of_peer.pop(peer_id, None)
        self._session_of_peer.pop(peer_id, None)
        departure = self.rooms.leave(peer_id)
        if departure is None:
            return
        now = self.settings.clock()
        if session_id is not None:  # the row first: whoever hears "peer-left" finds it closed
            await self.store.close_session(session_id, now)
        for other in departure.remaining:
            await self._emit_to_peer(other.id, "peer-left", {"id": peer_id})
        if departure.room_now_empty:
            await self.store.extend_room(departure.room_id, now + self.settings.room_ttl)

    async def _emit_to_peer(self, peer_id: str, event: str, data: dict[str, Any]) -> None:
        sid = self._sid_of_peer.get(peer_id)
        if sid is not None:
            await self.sio.emit(event, data, to=sid)
