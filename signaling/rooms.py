"""Who is in which call, capacity, and who may signal whom. Plain code: no I/O, no clock, no randomness."""

from __future__ import annotations

from dataclasses import dataclass, field

from signaling.errors import AlreadyJoined, RoomFull, UnknownPeer


@dataclass(frozen=True)
class Participant:
    id: str
    """Random peer id handed to the other participants (never the transport's connection id)."""
    name: str | None
    """What the person typed, or None."""


@dataclass
class Room:
    id: str
    members: dict[str, Participant] = field(default_factory=dict)


@dataclass(frozen=True)
class Admission:
    room_id: str
    participant: Participant
    others: tuple[Participant, ...]
    """Who was already in the room, in order of arrival."""


@dataclass(frozen=True)
class Departure:
    room_id: str
    participant: Participant
    remaining: tuple[Participant, ...]
    room_now_empty: bool


class RoomRegistry:
    """Membership of every active room on this node. A room exists only while someone is in it.

    Each method runs to completion without awaiting, so under asyncio a join is atomic: ten joins
    arriving together admit exactly `capacity`.
    """

    def __init__(self, capacity: int = 3) -> None:
        if not 1 <= capacity <= 3:
            raise ValueError("capacity must be between 1 and 3")
        self.capacity = capacity
        self._rooms: dict[str, Room] = {}
        self._room_of: dict[str, str] = {}

    def join(self, room_id: str, participant: Participant, capacity: int | None = None) -> Admission:
        """Admit `participant` unless the room holds `capacity` people already (default: the registry's;
        a room's own capacity can only be lower)."""
        if participant.id in self._room_of:
            raise AlreadyJoined()
        room = self._rooms.get(room_id) or Room(room_id)
        if len(room.members) >= min(self.capacity, capacity or self.capacity):
            raise RoomFull()
        others = tuple(room.members.values())
        room.members[participant.id] = participant
        self._rooms[room_id] = room
        self._room_of[participant.id] = room_id
        return Admission(room_id, participant, others)

    def leave(self, peer_id: str) -> Departure | None:
        """Remove a participant; None when it was in no room. An emptied room is forgotten."""
        room_id = self._room_of.pop(peer_id, None)
        if room_id is None:
            return None
        room = self._rooms[room_id]
        participant = room.members.pop(peer_id)
        if not room.members:
            del self._rooms[room_id]
        return Departure(room_id, participant, tuple(room.members.values()), not room.members)

    def participant(self, peer_id: str) -> Participant | None:
        """The participant with this id, wherever they are; None when in no room."""
        room_id = self._room_of.get(peer_id)
        return self._rooms[room_id].members.get(peer_id) if room_id is not None else None

    def room_of(self, peer_id: str) -> str | None:
        return self._room_of.get(peer_id)

    def members(self, room_id: str) -> tuple[Participant, ...]:
        room = self._rooms.get(room_id)
        return tuple(room.members.values()) if room else ()

    def check_can_signal(self, sender: str, target: str) -> None:
        """Raise UnknownPeer unless `target` is another participant of the sender's room."""
        room_id = self._room_of.get(sender)
        if room_id is None or target == sender or self._room_of.get(target) != room_id:
            raise UnknownPeer()

    @property
    def active_rooms(self) -> int:
        return len(self._rooms)

    @property
    def participants(self) -> int:
        return len(self._room_of)
