"""The records and the one interface every metadata store backend implements.

All of the store's logic is written once in `metadata_store.sql.SqlStore`; the SQLite and PostgreSQL
backends only supply a connection and their migrations. Times are timezone-aware UTC datetimes passed
in by the caller (the clock is injected everywhere). Methods that read or write personal data on
behalf of an operator, the API or a job take an `actor` and write the audit entry in the same
transaction as the work, so there is no read or write without its entry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

DEFAULT_CONTROLLER = "default"
"""The controller `kijkmee serve` creates for rooms made on its own home page."""

SUBJECT_KINDS = ("ip", "name", "phone", "email")
REQUEST_KINDS = ("access", "export", "rectify", "erase", "restrict")


class StoreError(Exception):
    """A request the store refuses, in words fit for an operator (never containing personal data)."""


class NotFound(StoreError):
    pass


class Conflict(StoreError):
    """The thing exists already, or is in a state that does not allow this."""


@dataclass(frozen=True)
class ControllerRecord:
    id: str
    name: str
    created_at: dt.datetime
    status: str
    """"active", "offboarding" or "deleted"."""
    offboarding_at: dt.datetime | None = None
    delete_after: dt.datetime | None = None
    deleted_at: dt.datetime | None = None


ASK_CHOICES = ("none", "name", "phone", "name+phone")


@dataclass(frozen=True)
class RoomOptions:
    """What a controller chose for one call link (defaults: the home page's links)."""

    capacity: int = 3
    relay_only: bool = False
    """Media always through the relay: participants never learn each other's IP address."""
    ask: str = "name"
    """What the join form asks for, optional for the person: none, name, phone or name+phone."""
    embed_origins: tuple[str, ...] = ()
    """https origins allowed to frame the call (CSP frame-ancestors); empty: none may."""
    extend: bool = True
    """True: the link lives on for the TTL after each use; False: it ends at its expiry, full stop."""

    def __post_init__(self) -> None:
        if not 1 <= self.capacity <= 3:
            raise ValueError("capacity is 1, 2 or 3 (calls are a peer-to-peer mesh)")
        if self.ask not in ASK_CHOICES:
            raise ValueError("ask is one of " + ", ".join(ASK_CHOICES))


@dataclass(frozen=True)
class RoomRecord:
    id: str
    created_at: dt.datetime
    expires_at: dt.datetime
    controller_id: str = DEFAULT_CONTROLLER
    options: RoomOptions = field(default_factory=RoomOptions)


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    controller_id: str
    label: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None


@dataclass(frozen=True)
class SessionRecord:
    id: int
    room_id: str
    ip: str
    name: str | None
    joined_at: dt.datetime
    left_at: dt.datetime | None
    controller_id: str = DEFAULT_CONTROLLER
    phone: str | None = None
    email: str | None = None
    participants: int | None = None
    route: str | None = None
    setup_ms: int | None = None
    restricted_at: dt.datetime | None = None


@dataclass(frozen=True)
class VisitRecord:
    """One anonymised session: nothing in it leads back to a person or a session."""

    visitor: str
    day: str
    duration_minutes: int | None
    participants: int | None
    route: str | None
    setup_ms: int | None


@dataclass(frozen=True)
class RetentionResult:
    cutoff: dt.datetime
    anonymised: int
    """Sessions whose personal data was deleted."""
    visits: int
    """Anonymous telemetry rows written (restricted sessions write none)."""
    rooms_removed: int


@dataclass(frozen=True)
class SubjectRequestRecord:
    id: str
    controller_id: str
    kind: str
    received_at: dt.datetime
    deadline: dt.datetime
    completed_at: dt.datetime | None = None
    handled_by: str | None = None
    session_ids: tuple[int, ...] = ()
    outcome: dict[str, Any] = field(default_factory=dict)

    def overdue(self, now: dt.datetime) -> bool:
        return self.completed_at is None and now > self.deadline


@dataclass(frozen=True)
class OperatorRecord:
    username: str
    role: str
    password_hash: str
    totp_secret: bytes
    created_at: dt.datetime
    disabled_at: dt.datetime | None = None
    totp_last_step: int | None = None


@dataclass(frozen=True)
class BreachRow:
    id: str
    discovered_at: dt.datetime
    document: dict[str, Any]
    updated_at: dt.datetime


class MetadataStore(Protocol):
    """Rooms, sessions and everything the agreement asks about them. See `SqlStore` for the meaning of
    each method; this Protocol is what the rest of kijkmee may rely on."""

    # controllers
    async def ensure_controller(self, controller_id: str, name: str, now: dt.datetime) -> ControllerRecord: ...
    async def get_controller(self, controller_id: str) -> ControllerRecord | None: ...
    async def list_controllers(self) -> list[ControllerRecord]: ...

    # rooms and sessions (written by signaling for the person themselves: not audited)
    async def create_room(
        self, room_id: str, now: dt.datetime, expires_at: dt.datetime, controller_id: str = DEFAULT_CONTROLLER,
        options: RoomOptions | None = None,
    ) -> None: ...
    async def get_room(self, room_id: str) -> RoomRecord | None: ...
    async def extend_room(self, room_id: str, expires_at: dt.datetime) -> None: ...
    async def open_session(
        self, room_id: str, ip: str, name: str | None, now: dt.datetime,
        phone: str | None = None, email: str | None = None, together: Sequence[int] | None = None,
        present: int | None = None,
    ) -> int: ...
    async def close_session(self, session_id: int, now: dt.datetime, participants: int | None = None) -> None: ...
    async def note_participants(self, session_ids: Iterable[int], count: int) -> None: ...
    async def report_session(self, session_id: int, route: str | None, setup_ms: int | None) -> None: ...
    async def list_sessions(self) -> list[SessionRecord]: ...

    async def close(self) -> None: ...
