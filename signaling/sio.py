"""Socket.IO handlers: feed client events into the room membership and the store, send results out.

The protocol is in docs/signaling-protocol.md. Every handler goes through `_dispatch`, the one place
where a refusal becomes an ack and a `signal-error` event. SDP and candidates pass through memory
only: they are checked, handed to one peer of the sender's room and forgotten.

Seats live behind `Membership` (signaling/membership.py): in this process, or in Redis when several
nodes share the rooms. Messages go to a peer through the Socket.IO room named after its peer id
(`peer_room`), which every connection enters on join; with python-socketio's Redis manager that reaches
the peer on whichever node it is connected to.
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
    UnknownPeer,
)
from signaling.membership import Freed, Membership
from signaling.ratelimit import TokenBucket
from signaling.rooms import Participant
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


def peer_room(peer_id: str) -> str:
    """The Socket.IO room of one participant: its current connection, on whichever node."""
    return f"peer:{peer_id}"


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
    joining: bool = False
    """A join is under way (joins await the membership; a second one must not slip in meanwhile)."""
    closed: bool = False


class SignalingService:
    def __init__(
        self,
        sio: socketio.AsyncServer,
        rooms: Membership,
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
        self._timers: dict[str, asyncio.TimerHandle] = {}
        """Rejoin token -> end of the grace period of the seat this node holds for it."""
        self._expiring: set[asyncio.Future[None]] = set()
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
        try:
            await self._dropped(connection)
        except Exception as exc:  # the shared Redis away, say: the seat ends with its node's heartbeat
            log.error("handling a disconnect failed", extra={"error": type(exc).__name__})

    async def _dropped(self, connection: Connection) -> None:
        grace = self.settings.seat_grace.total_seconds()
        if connection.peer_id is None or connection.rejoin_token is None or grace <= 0:
            await self._depart(connection)
            return
        # Not a goodbye (that is `leave`): a reload, a network switch, a phone going to sleep. Keep the
        # seat and the session row for the grace period; the others see the person as away meanwhile.
        peer_id, token = connection.peer_id, connection.rejoin_token
        others = await self.rooms.hold(peer_id, connection.sid, grace)
        if others is None:  # the seat was taken back through another connection meanwhile
            return
        self._timers[token] = asyncio.get_running_loop().call_later(grace, self._expire_later, token)
        for other in others:
            await self._emit_to_peer(other.id, "peer-away", {"id": peer_id})

    def _expire_later(self, token: str) -> None:
        task = asyncio.ensure_future(self._expire(token))
        self._expiring.add(task)  # keep a reference until it is done
        task.add_done_callback(self._expiring.discard)

    async def _expire(self, token: str) -> None:
        """The grace period ended without a rejoin: the seat is freed as if the person had left."""
        self._timers.pop(token, None)
        try:
            freed = await self.rooms.release_held(token)
            if freed is not None:
                await self._after_free(freed)
        except Exception as exc:  # a timer callback: log, never raise into the loop
            log.error("freeing a held seat failed", extra={"error": type(exc).__name__})

    async def release_held_seats(self) -> None:
        """On shutdown: free every seat held here now, closing its session row. Seats shared with other
        nodes stay held: the person may come back through another node, which frees them otherwise."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for token in await self.rooms.held_tokens():
            await self._expire(token)

    async def maintain(self) -> None:
        """With shared seats: keep this node's heartbeat and free the seats of dead nodes and of held
        seats whose time ran out, every `maintenance_interval` seconds until cancelled."""
        interval = self.rooms.maintenance_interval
        if interval is None:
            return
        while True:
            try:
                if not await self.rooms.is_live():
                    await self._drop_lost_seats()
                for freed in await self.rooms.sweep():
                    await self._after_free(freed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away for a moment: try again at the next round
                log.error("seat maintenance failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(interval)

    async def _drop_lost_seats(self) -> None:
        """This node was taken for dead (its heartbeat ran out): connections whose seat is gone are closed,
        so their pages reconnect and join again."""
        log.warning("this node's heartbeat had run out; checking its seats")
        for connection in list(self._connections.values()):
            if connection.peer_id is not None and await self.rooms.participant(connection.peer_id) is None:
                connection.peer_id = connection.room_id = connection.session_id = connection.rejoin_token = None
                await self.sio.disconnect(connection.sid)

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
        if connection.peer_id is not None or connection.joining:
            raise AlreadyJoined()
        connection.joining = True
        try:
            if request.rejoin is not None:
                taken = await self._take_back(connection, request.rejoin, request.room)
                if taken is not None:
                    return taken
            return await self._join_anew(connection, request.room, request.name, request.phone, request.email)
        finally:
            connection.joining = False

    async def _join_anew(self, connection: Connection, room_id: str, name: str | None, phone: str | None,
                         email: str | None) -> Reply:
        now = self.settings.clock()
        room = await self.store.get_room(room_id)
        if room is None or room.expires_at <= now:
            raise RoomExpired()
        if connection.closed:  # disconnected while we waited for the store
            raise NotJoined()
        participant = Participant(id=secrets.token_urlsafe(12), name=name)
        token = secrets.token_urlsafe(24)
        joined = await self.rooms.join(room_id, participant, room.options.capacity, owner=connection.sid,
                                       token=token, relay_only=room.options.relay_only)  # atomic
        for freed in joined.freed:
            await self._after_free(freed)
        connection.relay_only = room.options.relay_only
        connection.peer_id, connection.room_id = participant.id, room_id
        if connection.closed:  # disconnected while the seat was taken: its disconnect found no seat yet
            await self._depart(connection)
            raise NotJoined()
        await self.sio.enter_room(connection.sid, peer_room(participant.id))
        # The call's size goes with the session row, in its transaction (it was a second one): telemetry
        # that cannot fail apart from the row itself.
        together = [seat.session_id for seat in joined.others if seat.session_id is not None]
        try:
            connection.session_id = await self.store.open_session(
                room_id, connection.ip, name, now, phone=phone, email=email, together=together,
                present=len(joined.others) + 1,
            )
            await self.rooms.set_session(participant.id, connection.session_id)
        except Exception:
            written = connection.session_id
            await self._depart(connection)
            if written is not None:
                await self.store.close_session(written, self.settings.clock())
            raise
        if connection.closed:  # disconnected while the row was written
            await self.store.close_session(connection.session_id, self.settings.clock())
            raise NotJoined()
        for other in joined.others:
            await self._emit_to_peer(other.participant.id, "peer-joined",
                                     {"id": participant.id, "name": participant.name})
        connection.rejoin_token = token
        return {
            "self": participant.id,
            "peers": [{"id": s.participant.id, "name": s.participant.name} for s in joined.others],
            "iceServers": self.settings.ice_servers(participant.id),
            "iceTransportPolicy": "relay" if room.options.relay_only else self.settings.ice_transport_policy,
            "rejoinToken": token,
        }

    async def _take_back(self, connection: Connection, token: str, room_id: str) -> Reply | None:
        """The same person is back: same seat, same peer id, same session row, through any node. The
        others hear `peer-back` and negotiate afresh with this peer (its old connection is gone). None:
        the token is spent, unknown or of another room (an ordinary join follows)."""
        new_token = secrets.token_urlsafe(24)  # a token works once
        taken = await self.rooms.take_back(token, room_id, owner=connection.sid, new_token=new_token)
        if taken is None:
            return None
        timer = self._timers.pop(token, None)
        if timer is not None:
            timer.cancel()
        seat = taken.seat
        peer_id = seat.participant.id
        if taken.previous_owner is not None and taken.previous_owner != connection.sid:
            # The old connection had not been noticed gone (or is a copy of the page): it loses the seat.
            old = self._connections.get(taken.previous_owner)
            if old is not None:
                old.peer_id = old.room_id = old.session_id = old.rejoin_token = None
            await self.sio.disconnect(taken.previous_owner)  # on any node
        connection.peer_id, connection.room_id, connection.session_id = peer_id, seat.room_id, seat.session_id
        connection.relay_only = seat.relay_only
        connection.rejoin_token = new_token
        await self.sio.enter_room(connection.sid, peer_room(peer_id))
        if connection.closed:  # gone again while taking it (its disconnect found no seat): hold it anew
            await self._dropped(connection)
            raise NotJoined()
        for other in taken.others:
            await self._emit_to_peer(other.id, "peer-back", {"id": peer_id, "name": seat.participant.name})
        return {
            "self": peer_id,
            "peers": [{"id": p.id, "name": p.name} for p in taken.others],
            "iceServers": self.settings.ice_servers(peer_id),
            "iceTransportPolicy": "relay" if seat.relay_only else self.settings.ice_transport_policy,
            "rejoinToken": new_token,
            "rejoined": True,
        }

    def _description(self, kind: str) -> Callable[[Connection, Any], Awaitable[Reply]]:
        async def forward(connection: Connection, payload: Any) -> Reply:
            sender = self._require_joined(connection)
            message = parse_description(payload)
            await self._check_can_signal(connection, sender, message.to)
            sdp = relay_only_sdp(message.sdp) if connection.relay_only else message.sdp
            await self._emit_to_peer(message.to, kind, {"from": sender, "sdp": sdp})
            return {}

        return forward

    async def _candidate(self, connection: Connection, payload: Any) -> Reply:
        sender = self._require_joined(connection)
        message = parse_candidate(payload)
        await self._check_can_signal(connection, sender, message.to)
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

    async def _check_can_signal(self, connection: Connection, sender: str, target: str) -> None:
        """UnknownPeer unless `target` is another participant of the sender's room. When the target is
        connected here, this node's own record of both connections answers (no Redis round trip for each
        offer, answer and candidate); otherwise the membership does."""
        sid = self.sio.manager.connected_member(peer_room(target))
        other = self._connections.get(sid) if sid is not None else None
        if other is None or other.peer_id != target:
            await self.rooms.check_can_signal(sender, target)
            return
        if sender == target or other.room_id is None or other.room_id != connection.room_id:
            raise UnknownPeer()

    def _require_joined(self, connection: Connection) -> str:
        if connection.peer_id is None:
            raise NotJoined()
        return connection.peer_id

    async def _depart(self, connection: Connection) -> None:
        """The connection's person leaves: its seat is freed (unless another connection took it back)."""
        peer_id = connection.peer_id
        connection.peer_id = connection.room_id = connection.session_id = None
        if peer_id is None:
            return
        if not connection.closed:
            await self.sio.leave_room(connection.sid, peer_room(peer_id))
        freed = await self.rooms.leave(peer_id, connection.sid)
        if freed is not None:
            await self._after_free(freed)

    async def _after_free(self, freed: Freed) -> None:
        """A seat was freed: close the session row, tell the others, keep the link alive for a while."""
        now = self.settings.clock()
        if freed.seat.session_id is not None:  # the row first: whoever hears "peer-left" finds it closed
            await self.store.close_session(freed.seat.session_id, now)
        for other in freed.remaining:
            await self._emit_to_peer(other, "peer-left", {"id": freed.seat.participant.id})
        if freed.room_now_empty:
            await self.store.extend_room(freed.seat.room_id, now + self.settings.room_ttl)

    async def _emit_to_peer(self, peer_id: str, event: str, data: dict[str, Any]) -> None:
        # Straight to the peer when it is connected here; through Redis only when it is elsewhere.
        await self.sio.manager.emit_to_single(event, data, peer_room(peer_id))

    async def end_room(self, room_id: str) -> int:
        """The controller ended the link (DELETE /api/v1/rooms/<id>, after the store ended it, so nobody
        can join again): everyone in the call hears `room-ended`, on whichever node, and every seat is
        freed now, held ones too, instead of when the last person leaves. Returns the seats freed."""
        members = await self.rooms.members(room_id)
        ids = {member.id for member in members}
        here = {c.peer_id: c for c in self._connections.values() if c.peer_id in ids}
        for local in here.values():
            # Nothing to take back, and before anyone hears `room-ended`: a page that closes its
            # connection on hearing it must not have its seat held for the grace period meanwhile.
            local.rejoin_token = None
        for member in members:
            await self._emit_to_peer(member.id, "room-ended", {})
        for member in members:
            connection = here.get(member.id)
            if connection is not None and connection.peer_id is not None:
                await self._depart(connection)
                continue
            if connection is not None:
                continue  # it closed meanwhile and its seat went with it
            freed = await self.rooms.leave(member.id, None)  # held, or connected through another node
            if freed is not None:
                await self._after_free(freed)
        return len(members)
