"""The narrow interface every metadata store backend implements."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class RoomRecord:
    id: str
    created_at: dt.datetime
    expires_at: dt.datetime


@dataclass(frozen=True)
class SessionRecord:
    id: int
    room_id: str
    ip: str
    name: str | None
    joined_at: dt.datetime
    left_at: dt.datetime | None


class MetadataStore(Protocol):
    """Rooms and participant sessions. Times are timezone-aware UTC datetimes passed in by the caller."""

    async def create_room(self, room_id: str, now: dt.datetime, expires_at: dt.datetime) -> None: ...

    async def get_room(self, room_id: str) -> RoomRecord | None: ...

    async def extend_room(self, room_id: str, expires_at: dt.datetime) -> None:
        """Move the room's expiry later (never earlier)."""
        ...

    async def open_session(self, room_id: str, ip: str, name: str | None, now: dt.datetime) -> int:
        """Record that someone joined; `name` only when they typed one. Returns the session id."""
        ...

    async def close_session(self, session_id: int, now: dt.datetime) -> None: ...

    async def list_sessions(self) -> list[SessionRecord]: ...

    async def close(self) -> None: ...
