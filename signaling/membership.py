"""Who holds which seat, behind one async interface: in this process (the default) or in Redis (many nodes).

The Socket.IO handlers (signaling/sio.py) talk to a `Membership` only. `LocalMembership` wraps the
plain, I/O-free `RoomRegistry` (signaling/rooms.py) for one node; `signaling.redis_membership` keeps
the same facts in Redis so several nodes behind a load balancer share them. Both keep, per seat, what
any node needs to finish a call someone else started: the session row's id, whether the room is
relay-only, the rejoin token, and which connection ("owner", a Socket.IO sid) holds the seat now.

A seat is *live* (a connection owns it) or *held* (its connection dropped without a leave; the same
person may take it back with the rejoin token until the grace period ends). A rejoin token takes a seat
back from a live connection too: a phone that switched networks, or a person whose node died, comes
back before the server noticed the old connection was gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from signaling.rooms import Participant, RoomRegistry


@dataclass(frozen=True)
class Seat:
    """A taken seat as any node sees it."""

    room_id: str
    participant: Participant
    session_id: int | None
    """The session row to close when the seat is freed (None until it was written)."""
    relay_only: bool


@dataclass(frozen=True)
class Freed:
    """A seat that was given up: its session row is to be closed and `remaining` told `peer-left`."""

    seat: Seat
    remaining: tuple[str, ...]
    """Peer ids still in the room, in order of arrival."""
    room_now_empty: bool


@dataclass(frozen=True)
class Joined:
    others: tuple[Seat, ...]
    """Who was already in the room, in order of arrival."""
    freed: tuple[Freed, ...] = ()
    """Seats of nodes found dead while joining, cleared first (Redis only); their rooms need telling."""


@dataclass(frozen=True)
class TakenBack:
    seat: Seat
    others: tuple[Participant, ...]
    previous_owner: str | None
    """The connection that still owned the seat (not yet noticed gone), to be disconnected; None when
    the seat was held."""


class Membership(Protocol):
    """Seats of every active room. Every change is atomic: simultaneous joins never exceed a capacity."""

    shared: bool
    """True when seats outlive this process (other nodes see them and free them): a node shutting down
    then leaves its held seats for the others instead of freeing them."""

    maintenance_interval: float | None
    """Seconds between `sweep` calls, or None when nothing needs sweeping."""

    async def join(self, room_id: str, participant: Participant, capacity: int, *, owner: str, token: str,
                   relay_only: bool) -> Joined:
        """Admit `participant` for connection `owner`, or raise RoomFull / AlreadyJoined."""

    async def set_session(self, peer_id: str, session_id: int) -> None:
        """Remember the seat's session row (written after the seat was taken)."""

    async def leave(self, peer_id: str, owner: str | None) -> Freed | None:
        """Free the seat if `owner` (None: whoever) still owns it; None when it did not."""

    async def hold(self, peer_id: str, owner: str, grace_seconds: float) -> tuple[Participant, ...] | None:
        """Keep `owner`'s seat for its rejoin token after an unexpected disconnect; the others in the room
        to tell `peer-away`, or None when `owner` no longer owns it."""

    async def release_held(self, token: str) -> Freed | None:
        """The grace period of the seat held for `token` ended: free it (None when it was taken back)."""

    async def held_tokens(self) -> list[str]:
        """Tokens of the seats held in this process (empty when `shared`)."""

    async def take_back(self, token: str, room_id: str, *, owner: str, new_token: str) -> TakenBack | None:
        """Give the seat of `token` in `room_id` to connection `owner` with a fresh token; None when the
        token is unknown, spent, or of another room."""

    async def members(self, room_id: str) -> tuple[Participant, ...]: ...

    async def participant(self, peer_id: str) -> Participant | None: ...

    async def check_can_signal(self, sender: str, target: str) -> None:
        """Raise UnknownPeer unless `target` is another participant of the sender's room."""

    async def counts(self) -> tuple[int, int]:
        """(active rooms, participants)."""

    async def sweep(self) -> list[Freed]:
        """Free the seats nobody will come back for (members of dead nodes, held seats past their time)."""

    async def is_live(self) -> bool:
        """False when this node was taken for dead meanwhile (its seats may be gone)."""


@dataclass
class _LocalSeat:
    seat: Seat
    owner: str
    """The owning connection's sid; "" while held."""
    token: str


class LocalMembership:
    """Seats in this process: the RoomRegistry plus what the registry does not need to know. Each method
    runs without awaiting anything, so each is atomic under asyncio."""

    shared = False
    maintenance_interval: float | None = None

    def __init__(self, registry: RoomRegistry) -> None:
        self.registry = registry
        self._seats: dict[str, _LocalSeat] = {}
        self._peer_of_token: dict[str, str] = {}

    async def join(self, room_id: str, participant: Participant, capacity: int, *, owner: str, token: str,
                   relay_only: bool) -> Joined:
        admission = self.registry.join(room_id, participant, capacity)
        self._seats[participant.id] = _LocalSeat(Seat(room_id, participant, None, relay_only), owner, token)
        self._peer_of_token[token] = participant.id
        return Joined(tuple(self._seats[p.id].seat for p in admission.others))

    async def set_session(self, peer_id: str, session_id: int) -> None:
        local = self._seats.get(peer_id)
        if local is not None:
            s = local.seat
            local.seat = Seat(s.room_id, s.participant, session_id, s.relay_only)

    async def leave(self, peer_id: str, owner: str | None) -> Freed | None:
        local = self._seats.get(peer_id)
        if local is None or (owner is not None and local.owner != owner):
            return None
        return self._free(local)

    def _free(self, local: _LocalSeat) -> Freed | None:
        peer_id = local.seat.participant.id
        del self._seats[peer_id]
        self._peer_of_token.pop(local.token, None)
        departure = self.registry.leave(peer_id)
        if departure is None:  # pragma: no cover - seats and registry change together
            return None
        return Freed(local.seat, tuple(p.id for p in departure.remaining), departure.room_now_empty)

    async def hold(self, peer_id: str, owner: str, grace_seconds: float) -> tuple[Participant, ...] | None:
        local = self._seats.get(peer_id)
        if local is None or not owner or local.owner != owner:
            return None
        local.owner = ""
        return tuple(p for p in self.registry.members(local.seat.room_id) if p.id != peer_id)

    async def release_held(self, token: str) -> Freed | None:
        local = self._seats.get(self._peer_of_token.get(token, ""))
        if local is None or local.owner:
            return None
        return self._free(local)

    async def held_tokens(self) -> list[str]:
        return [local.token for local in self._seats.values() if not local.owner]

    async def take_back(self, token: str, room_id: str, *, owner: str, new_token: str) -> TakenBack | None:
        local = self._seats.get(self._peer_of_token.get(token, ""))
        if local is None or local.seat.room_id != room_id:
            return None
        previous = local.owner or None
        del self._peer_of_token[token]
        local.owner, local.token = owner, new_token
        self._peer_of_token[new_token] = local.seat.participant.id
        others = tuple(p for p in self.registry.members(room_id) if p.id != local.seat.participant.id)
        return TakenBack(local.seat, others, previous)

    async def members(self, room_id: str) -> tuple[Participant, ...]:
        return self.registry.members(room_id)

    async def participant(self, peer_id: str) -> Participant | None:
        return self.registry.participant(peer_id)

    async def check_can_signal(self, sender: str, target: str) -> None:
        self.registry.check_can_signal(sender, target)

    async def counts(self) -> tuple[int, int]:
        return self.registry.active_rooms, self.registry.participants

    async def sweep(self) -> list[Freed]:
        return []  # held seats end on their own timer; there are no other nodes to die

    async def is_live(self) -> bool:
        return True
