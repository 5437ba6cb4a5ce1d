"""The store's logic, written once for both backends.

A backend gives `SqlStore` a `Db`: transactions whose statements use ``?`` placeholders (PostgreSQL's
adapter numbers them), plus a `Dialect` for the few expressions that differ. Personal values are
encrypted with the controller's key (`metadata_store.crypto`) before they reach SQL, and every read or
write of personal data on behalf of an operator, the API or a job appends its audit entry inside the
same transaction.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from metadata_store import audit
from metadata_store.crypto import SERVICE_KEY_ID, DataKey, KeyStore, MissingKey, check_controller_id
from metadata_store.schema import PERSONAL_COLUMNS
from metadata_store.store import (
    DEFAULT_CONTROLLER,
    REQUEST_KINDS,
    SUBJECT_KINDS,
    ApiKeyRecord,
    BreachRow,
    Conflict,
    ControllerRecord,
    NotFound,
    OperatorRecord,
    RetentionResult,
    RoomOptions,
    RoomRecord,
    SessionRecord,
    StoreError,
    SubjectRequestRecord,
    VisitRecord,
)

ROUTES = ("direct", "relay")
MAX_GRACE = "one calendar month"


class Tx(Protocol):
    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]: ...
    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; the number of rows it changed."""
        ...


@dataclass(frozen=True)
class Dialect:
    name: str
    day: Callable[[str], str]
    """SQL for the UTC date (YYYY-MM-DD text) of a timestamp column."""
    rounded_minutes: Callable[[str, str], str]
    """SQL for the minutes between two timestamp columns, rounded to 5."""
    random_hex: str
    """SQL for 32 random hex characters."""
    audit_lock: str | None
    """A statement that serialises audit appends across nodes (None when the transaction already does)."""


class Db(Protocol):
    dialect: Dialect

    def transaction(self, snapshot: bool = False) -> AbstractAsyncContextManager[Tx]:
        """A transaction; `snapshot`: read-only, every statement sees the same moment (backups)."""
        ...
    async def schema_version(self, tx: Tx) -> int: ...
    async def after_restore(self, tx: Tx) -> None:
        """Bring counters (identity sequences) past the ids a restore inserted."""
        ...
    async def compact(self, tables: Sequence[str], full: bool = False) -> None:
        """Reclaim deleted rows' space so their bytes do not linger, outside any transaction; `full`:
        rewrite everything (for one-off cases such as a migration that removed plaintext)."""
        ...
    async def close(self) -> None: ...


Migration = tuple[int, Sequence["str | Callable[[Tx, KeyStore, dt.datetime], Awaitable[None]]"]]


def add_months(when: dt.datetime, months: int) -> dt.datetime:
    """Calendar months later (earlier for negative), clamped to the month's last day (31 Jan + 1 = 28/29 Feb)."""
    index = when.year * 12 + (when.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    days = [31, 29 if (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) else 28, 31, 30, 31, 30, 31, 31, 30,
            31, 30, 31][month - 1]
    return when.replace(year=year, month=month, day=min(when.day, days))


def retention_cutoff(now: dt.datetime, days: int) -> dt.datetime:
    """Sessions that joined before this are anonymised: `days` ago, but never more than 3 calendar months."""
    if days < 1:
        raise ValueError("the retention period is at least 1 day")
    return max(now - dt.timedelta(days=days), add_months(now, -3))


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError("store times must be timezone-aware")
    return value.astimezone(dt.UTC)


def _dt(value: Any) -> dt.datetime:
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC)
    raise TypeError(f"not a timestamp: {type(value).__name__}")


def _odt(value: Any) -> dt.datetime | None:
    return None if value is None else _dt(value)


_SESSION_COLUMNS = (
    "id, controller_id, room_id, ip, name, phone, email, joined_at, left_at, participants, route, setup_ms, "
    "restricted_at"
)
_CONTROLLER_COLUMNS = "id, name, created_at, status, offboarding_at, delete_after, deleted_at"
_ROOM_COLUMNS = "id, created_at, expires_at, controller_id, capacity, relay_only, ask, embed_origins, extend"
_OPERATOR_COLUMNS = "username, role, password_hash, totp_secret, created_at, disabled_at, totp_last_step"
_REQUEST_COLUMNS = "id, controller_id, kind, received_at, deadline, completed_at, handled_by, session_ids, outcome"


def _in(ids: Sequence[int]) -> str:
    return ", ".join("?" for _ in ids)


class SqlStore:
    """The metadata store. Open through `SQLiteStore.open` or `PostgresStore.open`."""

    def __init__(self, db: Db, keys: KeyStore) -> None:
        self._db = db
        self.keys = keys

    @property
    def db(self) -> Db:
        """The backend's connection, for the backup module."""
        return self._db

    # --- helpers --------------------------------------------------------------------------------------

    def _key(self, controller_id: str) -> DataKey:
        return self.keys.get(controller_id)

    def _session(self, row: Sequence[Any]) -> SessionRecord:
        key = self._key(row[1])
        values = {
            column: None if blob is None else key.decrypt("sessions", column, blob)
            for column, blob in zip(PERSONAL_COLUMNS, row[3:7], strict=True)
        }
        return SessionRecord(
            id=int(row[0]), controller_id=row[1], room_id=row[2], ip=values["ip"] or "", name=values["name"],
            phone=values["phone"], email=values["email"], joined_at=_dt(row[7]), left_at=_odt(row[8]),
            participants=row[9], route=row[10], setup_ms=row[11], restricted_at=_odt(row[12]),
        )

    @staticmethod
    def _controller(row: Sequence[Any]) -> ControllerRecord:
        return ControllerRecord(
            id=row[0], name=row[1], created_at=_dt(row[2]), status=row[3], offboarding_at=_odt(row[4]),
            delete_after=_odt(row[5]), deleted_at=_odt(row[6]),
        )

    @staticmethod
    def _request(row: Sequence[Any]) -> SubjectRequestRecord:
        ids = tuple(int(x) for x in row[7].split(",") if x) if row[7] else ()
        return SubjectRequestRecord(
            id=row[0], controller_id=row[1], kind=row[2], received_at=_dt(row[3]), deadline=_dt(row[4]),
            completed_at=_odt(row[5]), handled_by=row[6], session_ids=ids,
            outcome=json.loads(row[8]) if row[8] else {},
        )

    async def _audit(self, tx: Tx, actor: str, action: str, object_id: str, now: dt.datetime) -> audit.AuditEntry:
        if self._db.dialect.audit_lock:
            await tx.execute(self._db.dialect.audit_lock)
        rows = await tx.fetch(
            "SELECT seq, at, actor, action, object_id, prev_hash, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
        )
        head = None if not rows else _audit_entry(rows[0])
        entry = audit.append(head, actor, action, object_id, _utc(now))
        await tx.execute(
            "INSERT INTO audit_log (seq, at, actor, action, object_id, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
            entry.seq, entry.at, entry.actor, entry.action, entry.object_id, entry.prev_hash, entry.hash,
        )
        return entry

    async def _active_controller(self, tx: Tx, controller_id: str) -> ControllerRecord:
        rows = await tx.fetch(f"SELECT {_CONTROLLER_COLUMNS} FROM controllers WHERE id = ?", controller_id)
        if not rows:
            raise NotFound(f"there is no controller {controller_id!r}")
        record = self._controller(rows[0])
        if record.status == "deleted":
            raise Conflict(f"controller {controller_id!r} was deleted at the end of its service")
        return record

    # --- controllers ----------------------------------------------------------------------------------

    async def ensure_controller(self, controller_id: str, name: str, now: dt.datetime) -> ControllerRecord:
        """Create the controller and its data key unless it exists; return it as it is now."""
        check_controller_id(controller_id)
        if controller_id == SERVICE_KEY_ID:
            raise ValueError("that id is reserved")
        name = " ".join(name.split())[:200] or controller_id
        async with self._db.transaction() as tx:
            rows = await tx.fetch(f"SELECT {_CONTROLLER_COLUMNS} FROM controllers WHERE id = ?", controller_id)
            if rows:
                return self._controller(rows[0])
            self.keys.create(controller_id)
            await tx.execute(
                "INSERT INTO controllers (id, name, created_at, status) VALUES (?, ?, ?, 'active')",
                controller_id, name, _utc(now),
            )
            rows = await tx.fetch(f"SELECT {_CONTROLLER_COLUMNS} FROM controllers WHERE id = ?", controller_id)
            return self._controller(rows[0])

    async def get_controller(self, controller_id: str) -> ControllerRecord | None:
        async with self._db.transaction() as tx:
            rows = await tx.fetch(f"SELECT {_CONTROLLER_COLUMNS} FROM controllers WHERE id = ?", controller_id)
        return self._controller(rows[0]) if rows else None

    async def list_controllers(self) -> list[ControllerRecord]:
        async with self._db.transaction() as tx:
            rows = await tx.fetch(f"SELECT {_CONTROLLER_COLUMNS} FROM controllers ORDER BY id")
        return [self._controller(r) for r in rows]

    # --- rooms ----------------------------------------------------------------------------------------

    async def create_room(
        self, room_id: str, now: dt.datetime, expires_at: dt.datetime, controller_id: str = DEFAULT_CONTROLLER,
        options: RoomOptions | None = None,
    ) -> None:
        o = options or RoomOptions()
        async with self._db.transaction() as tx:
            controller = await self._active_controller(tx, controller_id)
            if controller.status != "active":
                raise Conflict(f"controller {controller_id!r} is ending its service; no new rooms")
            await tx.execute(
                "INSERT INTO rooms (id, controller_id, created_at, expires_at, capacity, relay_only, ask,"
                " embed_origins, extend) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                room_id, controller_id, _utc(now), _utc(expires_at), o.capacity, int(o.relay_only), o.ask,
                " ".join(o.embed_origins) or None, int(o.extend),
            )

    @staticmethod
    def _room(r: Sequence[Any]) -> RoomRecord:
        options = RoomOptions(capacity=int(r[4]), relay_only=bool(r[5]), ask=r[6],
                              embed_origins=tuple((r[7] or "").split()), extend=bool(r[8]))
        return RoomRecord(id=r[0], created_at=_dt(r[1]), expires_at=_dt(r[2]), controller_id=r[3], options=options)

    async def get_room(self, room_id: str) -> RoomRecord | None:
        async with self._db.transaction() as tx:
            rows = await tx.fetch(f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE id = ?", room_id)
        return self._room(rows[0]) if rows else None

    async def end_room(self, room_id: str, controller_id: str, now: dt.datetime) -> None:
        """End a call link now (the controller deleted it): nobody can join any more. Its sessions stay
        until retention; the room row goes with them."""
        async with self._db.transaction() as tx:
            if not await tx.execute(
                "UPDATE rooms SET expires_at = ?, extend = 0 WHERE id = ? AND controller_id = ?",
                _utc(now), room_id, controller_id,
            ):
                raise NotFound("there is no such room")

    # --- API keys -------------------------------------------------------------------------------------

    async def add_api_key(
        self, key_id: str, controller_id: str, secret_hash: str, label: str, actor: str, now: dt.datetime
    ) -> ApiKeyRecord:
        async with self._db.transaction() as tx:
            controller = await self._active_controller(tx, controller_id)
            if controller.status != "active":
                raise Conflict(f"controller {controller_id!r} is ending its service")
            await tx.execute(
                "INSERT INTO api_keys (id, controller_id, secret_hash, label, created_at) VALUES (?, ?, ?, ?, ?)",
                key_id, controller_id, secret_hash, label, _utc(now),
            )
            await self._audit(tx, actor, "apikey.create", f"apikey:{key_id}", now)
        return ApiKeyRecord(key_id, controller_id, label, _utc(now))

    async def api_key(self, key_id: str) -> tuple[ApiKeyRecord, str] | None:
        """The key and its secret's hash, or None."""
        async with self._db.transaction() as tx:
            rows = await tx.fetch(
                "SELECT id, controller_id, label, created_at, revoked_at, secret_hash FROM api_keys WHERE id = ?",
                key_id,
            )
        if not rows:
            return None
        r = rows[0]
        return ApiKeyRecord(r[0], r[1], r[2], _dt(r[3]), _odt(r[4])), r[5]

    async def list_api_keys(self, controller_id: str | None = None) -> list[ApiKeyRecord]:
        sql = "SELECT id, controller_id, label, created_at, revoked_at FROM api_keys"
        async with self._db.transaction() as tx:
            rows = await (tx.fetch(sql + " WHERE controller_id = ? ORDER BY created_at, id", controller_id)
                          if controller_id else tx.fetch(sql + " ORDER BY controller_id, created_at, id"))
        return [ApiKeyRecord(r[0], r[1], r[2], _dt(r[3]), _odt(r[4])) for r in rows]

    async def revoke_api_key(self, key_id: str, actor: str, now: dt.datetime) -> None:
        async with self._db.transaction() as tx:
            if not await tx.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?", _utc(now), key_id
            ):
                raise NotFound("there is no such API key")
            await self._audit(tx, actor, "apikey.revoke", f"apikey:{key_id}", now)

    async def extend_room(self, room_id: str, expires_at: dt.datetime) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE rooms SET expires_at = ? WHERE id = ? AND expires_at < ? AND extend = 1",
                _utc(expires_at), room_id, _utc(expires_at),
            )

    # --- sessions -------------------------------------------------------------------------------------

    def _sealed(self, key: DataKey, values: Mapping[str, str | None]) -> list[Any]:
        """Ciphertext and blind index for each personal column, in PERSONAL_COLUMNS order."""
        out: list[Any] = []
        for column in PERSONAL_COLUMNS:
            value = values.get(column)
            if value is None:
                out += [None, None]
            else:
                out += [key.encrypt("sessions", column, value), key.blind_index(column, value)]
        return out

    async def open_session(
        self, room_id: str, ip: str, name: str | None, now: dt.datetime,
        phone: str | None = None, email: str | None = None, together: Sequence[int] | None = None,
        present: int | None = None,
    ) -> int:
        """Record that someone joined: the address, and typed values only when they typed them.
        `together`: the sessions of the others in the call at that moment (signaling's join); `present`:
        how many people are in it now (default: those sessions and this one; someone whose own session
        is still being written has no session id yet but counts). The new session's participant count is
        `present`, and the others' are raised to it, as note_participants does, in the same transaction.
        `together` None: no count (unknown)."""
        count = None if together is None else present or len(together) + 1
        async with self._db.transaction() as tx:
            rows = await tx.fetch("SELECT controller_id FROM rooms WHERE id = ?", room_id)
            if not rows:
                raise NotFound("there is no such room")
            controller_id = rows[0][0]
            sealed = self._sealed(self._key(controller_id), {"ip": ip, "name": name, "phone": phone, "email": email})
            inserted = await tx.fetch(
                "INSERT INTO sessions (controller_id, room_id, ip, ip_index, name, name_index, phone, phone_index,"
                " email, email_index, joined_at, participants) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " RETURNING id",
                controller_id, room_id, *sealed, _utc(now), count,
            )
            if together and count is not None:
                await self._note_participants(tx, list(together), count)
            return int(inserted[0][0])

    async def close_session(self, session_id: int, now: dt.datetime, participants: int | None = None) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE sessions SET left_at = ?, participants = CASE WHEN restricted_at IS NULL"
                " THEN COALESCE(?, participants) END WHERE id = ? AND left_at IS NULL",
                _utc(now), participants, session_id,
            )

    async def note_participants(self, session_ids: Iterable[int], count: int) -> None:
        """Raise each session's participant count to `count` (the most people seen together); restricted
        sessions get no telemetry."""
        ids = list(session_ids)
        if not ids:
            return
        async with self._db.transaction() as tx:
            await self._note_participants(tx, ids, count)

    @staticmethod
    async def _note_participants(tx: Tx, ids: list[int], count: int) -> None:
        await tx.execute(
            f"UPDATE sessions SET participants = ? WHERE id IN ({_in(ids)})"
            " AND (participants IS NULL OR participants < ?) AND restricted_at IS NULL",
            count, *ids, count,
        )

    async def report_session(self, session_id: int, route: str | None, setup_ms: int | None) -> None:
        """Telemetry the browser reports: the route its media took and how long setup took."""
        if route is not None and route not in ROUTES:
            raise ValueError("route is direct or relay")
        if setup_ms is not None and not 0 <= setup_ms <= 600_000:
            raise ValueError("setup time out of range")
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE sessions SET route = COALESCE(?, route), setup_ms = COALESCE(?, setup_ms)"
                " WHERE id = ? AND restricted_at IS NULL",
                route, setup_ms, session_id,
            )

    async def list_sessions(self) -> list[SessionRecord]:
        """Every session, decrypted: for tests and the store's own jobs, not for operators (see `read_sessions`)."""
        async with self._db.transaction() as tx:
            rows = await tx.fetch(f"SELECT {_SESSION_COLUMNS} FROM sessions ORDER BY id")
        return [self._session(r) for r in rows]

    async def read_sessions(
        self, actor: str, now: dt.datetime, controller_id: str, since: dt.datetime | None = None,
        until: dt.datetime | None = None, limit: int = 1000,
    ) -> list[SessionRecord]:
        """Sessions of one controller for an operator (support): audited; restricted sessions are left out."""
        async with self._db.transaction() as tx:
            await self._active_controller(tx, controller_id)
            rows = await tx.fetch(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE controller_id = ? AND restricted_at IS NULL"
                " AND joined_at >= ? AND joined_at < ? ORDER BY id LIMIT ?",
                controller_id, _utc(since or dt.datetime(1970, 1, 1, tzinfo=dt.UTC)),
                _utc(until or dt.datetime(9999, 1, 1, tzinfo=dt.UTC)), limit,
            )
            await self._audit(tx, actor, audit.Action.SESSION_READ, f"controller:{controller_id}", now)
        return [self._session(r) for r in rows]

    # --- retention ------------------------------------------------------------------------------------

    async def anonymise(self, cutoff: dt.datetime, now: dt.datetime, actor: str = "job:retention") -> RetentionResult:
        """Delete the personal data of every session that joined before `cutoff`, keeping anonymous
        telemetry (except for restricted sessions). Idempotent: a second run finds nothing to do."""
        d = self._db.dialect
        async with self._db.transaction() as tx:
            visits = await tx.execute(
                "INSERT INTO visits (visitor, day, duration_minutes, participants, route, setup_ms)"
                f" SELECT {d.random_hex}, {d.day('joined_at')}, {d.rounded_minutes('joined_at', 'left_at')},"
                " participants, route, (setup_ms + 50) / 100 * 100"
                " FROM sessions WHERE joined_at < ? AND restricted_at IS NULL ORDER BY random()",
                _utc(cutoff),
            )
            anonymised = await tx.execute("DELETE FROM sessions WHERE joined_at < ?", _utc(cutoff))
            rooms = await tx.execute(
                "DELETE FROM rooms WHERE expires_at < ? AND NOT EXISTS"
                " (SELECT 1 FROM sessions WHERE sessions.room_id = rooms.id)",
                _utc(cutoff),
            )
            await self._audit(
                tx, actor, audit.Action.SESSION_ANONYMISE, f"before:{audit.format_timestamp(_utc(cutoff))}", now
            )
        if anonymised:
            await self._db.compact(["sessions", "rooms", "visits"])
        return RetentionResult(cutoff=_utc(cutoff), anonymised=anonymised, visits=visits, rooms_removed=rooms)

    async def list_visits(self) -> list[VisitRecord]:
        async with self._db.transaction() as tx:
            rows = await tx.fetch(
                "SELECT visitor, day, duration_minutes, participants, route, setup_ms FROM visits ORDER BY day, visitor"
            )
        return [VisitRecord(*r) for r in rows]

    async def oldest_session(self) -> dt.datetime | None:
        async with self._db.transaction() as tx:
            rows = await tx.fetch("SELECT MIN(joined_at) FROM sessions")
        return _odt(rows[0][0]) if rows else None

    # --- data-subject requests ------------------------------------------------------------------------

    async def record_request(
        self, controller_id: str, kind: str, received_at: dt.datetime, actor: str, now: dt.datetime
    ) -> SubjectRequestRecord:
        """Register a request the controller passed on; its deadline is one month after receipt."""
        if kind not in REQUEST_KINDS:
            raise ValueError(f"a request is one of {', '.join(REQUEST_KINDS)}")
        request_id = "req-" + secrets.token_hex(8)
        received = _utc(received_at)
        async with self._db.transaction() as tx:
            await self._active_controller(tx, controller_id)
            await tx.execute(
                "INSERT INTO subject_requests (id, controller_id, kind, received_at, deadline) VALUES (?, ?, ?, ?, ?)",
                request_id, controller_id, kind, received, add_months(received, 1),
            )
            await self._audit(tx, actor, "subject.request", request_id, now)
            rows = await tx.fetch(f"SELECT {_REQUEST_COLUMNS} FROM subject_requests WHERE id = ?", request_id)
        return self._request(rows[0])

    async def get_request(self, request_id: str) -> SubjectRequestRecord | None:
        async with self._db.transaction() as tx:
            rows = await tx.fetch(f"SELECT {_REQUEST_COLUMNS} FROM subject_requests WHERE id = ?", request_id)
        return self._request(rows[0]) if rows else None

    async def list_requests(self, controller_id: str | None = None) -> list[SubjectRequestRecord]:
        async with self._db.transaction() as tx:
            if controller_id is None:
                rows = await tx.fetch(f"SELECT {_REQUEST_COLUMNS} FROM subject_requests ORDER BY received_at, id")
            else:
                rows = await tx.fetch(
                    f"SELECT {_REQUEST_COLUMNS} FROM subject_requests WHERE controller_id = ? ORDER BY received_at, id",
                    controller_id,
                )
        return [self._request(r) for r in rows]

    async def find_subject(
        self, controller_id: str, kind: str, value: str, since: dt.datetime, until: dt.datetime,
        actor: str, now: dt.datetime, object_id: str,
    ) -> list[SessionRecord]:
        """Sessions of one controller whose `kind` (ip, name, phone, email) equals `value` after
        normalisation, joined in [since, until). Restricted sessions are found too: the subject's rights
        still apply to them. `object_id` names the request in the audit log."""
        if kind not in SUBJECT_KINDS:
            raise ValueError(f"search by one of {', '.join(SUBJECT_KINDS)}")
        try:
            index = self._key(controller_id).blind_index(kind, value)
        except MissingKey:
            raise NotFound(f"there is no data of controller {controller_id!r}") from None
        async with self._db.transaction() as tx:
            await self._active_controller(tx, controller_id)
            rows = await tx.fetch(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE {kind}_index = ? AND controller_id = ?"
                " AND joined_at >= ? AND joined_at < ? ORDER BY id",
                index, controller_id, _utc(since), _utc(until),
            )
            await self._audit(tx, actor, audit.Action.SUBJECT_SEARCH, object_id, now)
        return [self._session(r) for r in rows]

    async def _owned(self, tx: Tx, controller_id: str, ids: Sequence[int]) -> list[Sequence[Any]]:
        if not ids:
            return []
        rows = await tx.fetch(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE controller_id = ? AND id IN ({_in(ids)}) ORDER BY id",
            controller_id, *ids,
        )
        if len(rows) != len(set(ids)):
            raise NotFound("some of those sessions do not exist (any more) for this controller")
        return rows

    async def export_sessions(
        self, controller_id: str, ids: Sequence[int], actor: str, now: dt.datetime, object_id: str
    ) -> list[SessionRecord]:
        async with self._db.transaction() as tx:
            rows = await self._owned(tx, controller_id, ids)
            await self._audit(tx, actor, audit.Action.SUBJECT_EXPORT, object_id, now)
        return [self._session(r) for r in rows]

    async def rectify_sessions(
        self, controller_id: str, ids: Sequence[int], changes: Mapping[str, str | None], actor: str,
        now: dt.datetime, object_id: str,
    ) -> int:
        """Replace typed values (name, phone, email; None clears one). The IP is a fact, not rectifiable."""
        unknown = set(changes) - {"name", "phone", "email"}
        if unknown or not changes:
            raise ValueError("rectify changes name, phone or email")
        async with self._db.transaction() as tx:
            owned = await self._owned(tx, controller_id, ids)
            if owned:  # none: still recorded, but `IN ()` is no SQL for PostgreSQL
                key = self._key(controller_id)
                for column, value in changes.items():
                    blob = None if value is None else key.encrypt("sessions", column, value)
                    index = None if value is None else key.blind_index(column, value)
                    await tx.execute(
                        f"UPDATE sessions SET {column} = ?, {column}_index = ?"
                        f" WHERE controller_id = ? AND id IN ({_in(ids)})",
                        blob, index, controller_id, *ids,
                    )
            await self._audit(tx, actor, audit.Action.SUBJECT_RECTIFY, object_id, now)
        if owned:
            await self._db.compact(["sessions"])
        return len(owned)

    async def erase_sessions(
        self, controller_id: str, ids: Sequence[int], actor: str, now: dt.datetime, object_id: str
    ) -> int:
        """Delete the sessions outright (art. 17): no telemetry is kept from them either."""
        async with self._db.transaction() as tx:
            await self._owned(tx, controller_id, ids)
            count = await tx.execute(
                f"DELETE FROM sessions WHERE controller_id = ? AND id IN ({_in(ids)})", controller_id, *ids
            ) if ids else 0
            await self._audit(tx, actor, audit.Action.SUBJECT_ERASE, object_id, now)
        await self._db.compact(["sessions"])
        return count

    async def restrict_sessions(
        self, controller_id: str, ids: Sequence[int], actor: str, now: dt.datetime, object_id: str
    ) -> int:
        """Keep the sessions but take them out of processing (art. 18): operators' reads, telemetry."""
        async with self._db.transaction() as tx:
            await self._owned(tx, controller_id, ids)
            count = await tx.execute(
                f"UPDATE sessions SET restricted_at = COALESCE(restricted_at, ?), route = NULL, setup_ms = NULL,"
                f" participants = NULL WHERE controller_id = ? AND id IN ({_in(ids)})",
                _utc(now), controller_id, *ids,
            ) if ids else 0
            await self._audit(tx, actor, audit.Action.SUBJECT_RESTRICT, object_id, now)
        return count

    async def complete_request(
        self, request_id: str, session_ids: Sequence[int], outcome: Mapping[str, Any], actor: str, now: dt.datetime
    ) -> SubjectRequestRecord:
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                "UPDATE subject_requests SET completed_at = ?, handled_by = ?, session_ids = ?, outcome = ?"
                " WHERE id = ? AND completed_at IS NULL",
                _utc(now), actor, ",".join(str(i) for i in sorted(set(session_ids))),
                json.dumps(dict(outcome), sort_keys=True), request_id,
            )
            if not changed:
                rows = await tx.fetch("SELECT completed_at FROM subject_requests WHERE id = ?", request_id)
                raise Conflict("that request was completed already") if rows else NotFound("there is no such request")
            await self._audit(tx, actor, "subject.complete", request_id, now)
            rows = await tx.fetch(f"SELECT {_REQUEST_COLUMNS} FROM subject_requests WHERE id = ?", request_id)
        return self._request(rows[0])

    # --- controller export and offboarding ------------------------------------------------------------

    async def export_controller(self, controller_id: str, actor: str, now: dt.datetime) -> dict[str, Any]:
        """Everything of the controller that holds or refers to personal data, decrypted (art. 28(3)(g))."""
        async with self._db.transaction() as tx:
            controller = await self._active_controller(tx, controller_id)
            rooms = await tx.fetch(
                "SELECT id, created_at, expires_at FROM rooms WHERE controller_id = ? ORDER BY created_at, id",
                controller_id,
            )
            sessions = await tx.fetch(
                f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE controller_id = ? ORDER BY id", controller_id
            )
            requests = await tx.fetch(
                f"SELECT {_REQUEST_COLUMNS} FROM subject_requests WHERE controller_id = ? ORDER BY received_at, id",
                controller_id,
            )
            await self._audit(tx, actor, audit.Action.CONTROLLER_EXPORT, f"controller:{controller_id}", now)
        return {
            "controller": controller,
            "rooms": [RoomRecord(id=r[0], created_at=_dt(r[1]), expires_at=_dt(r[2]), controller_id=controller_id)
                      for r in rooms],
            "sessions": [self._session(r) for r in sessions],
            "requests": [self._request(r) for r in requests],
        }

    async def start_offboarding(
        self, controller_id: str, delete_after: dt.datetime, actor: str, now: dt.datetime
    ) -> ControllerRecord:
        """End the service: no new rooms; everything is deleted at `delete_after` (at most a month away)."""
        if _utc(delete_after) > add_months(_utc(now), 1):
            raise ValueError(f"the grace period is at most {MAX_GRACE} (art. 3.3)")
        if _utc(delete_after) < _utc(now):
            raise ValueError("the end of the grace period cannot be in the past")
        async with self._db.transaction() as tx:
            controller = await self._active_controller(tx, controller_id)
            if controller.status != "active":
                raise Conflict(f"controller {controller_id!r} is already ending its service")
            await tx.execute(
                "UPDATE controllers SET status = 'offboarding', offboarding_at = ?, delete_after = ? WHERE id = ?",
                _utc(now), _utc(delete_after), controller_id,
            )
            await self._audit(tx, actor, audit.Action.CONTROLLER_OFFBOARD, f"controller:{controller_id}", now)
            rows = await tx.fetch(f"SELECT {_CONTROLLER_COLUMNS} FROM controllers WHERE id = ?", controller_id)
        return self._controller(rows[0])

    async def purge_controllers(self, now: dt.datetime, actor: str = "job:offboarding") -> list[str]:
        """Delete everything of each controller whose grace period has ended, then destroy its key."""
        async with self._db.transaction() as tx:
            due = [r[0] for r in await tx.fetch(
                "SELECT id FROM controllers WHERE status = 'offboarding' AND delete_after <= ? ORDER BY id", _utc(now)
            )]
            deleted = [r[0] for r in await tx.fetch("SELECT id FROM controllers WHERE status = 'deleted'")]
        # A purge stopped between its commit and the key's destruction left a deleted controller's key
        # behind; nothing else would ever remove it.
        for controller_id in deleted:
            self.keys.destroy(controller_id)
        done = []
        for controller_id in due:
            try:
                await self.delete_controller(controller_id, actor, now)
            except Conflict:  # another node purged it first
                self.keys.destroy(controller_id)
                continue
            done.append(controller_id)
        return done

    async def delete_controller(self, controller_id: str, actor: str, now: dt.datetime) -> None:
        async with self._db.transaction() as tx:
            await self._active_controller(tx, controller_id)
            await tx.execute("DELETE FROM sessions WHERE controller_id = ?", controller_id)
            await tx.execute("DELETE FROM rooms WHERE controller_id = ?", controller_id)
            await tx.execute("DELETE FROM api_keys WHERE controller_id = ?", controller_id)
            await tx.execute("DELETE FROM subject_requests WHERE controller_id = ?", controller_id)
            await tx.execute(
                "UPDATE controllers SET status = 'deleted', deleted_at = ? WHERE id = ?", _utc(now), controller_id
            )
            await self._audit(tx, actor, "controller.delete", f"controller:{controller_id}", now)
        # The key goes last: if deleting failed, the data stays readable for the next attempt.
        self.keys.destroy(controller_id)
        await self._db.compact(["sessions", "rooms", "subject_requests"])

    # --- audit log ------------------------------------------------------------------------------------

    async def append_audit(self, actor: str, action: str, object_id: str, now: dt.datetime) -> audit.AuditEntry:
        async with self._db.transaction() as tx:
            return await self._audit(tx, actor, action, object_id, now)

    async def audit_entries(self, after_seq: int = 0, limit: int | None = None) -> list[audit.AuditEntry]:
        async with self._db.transaction() as tx:
            sql = "SELECT seq, at, actor, action, object_id, prev_hash, hash FROM audit_log WHERE seq > ? ORDER BY seq"
            rows = await (tx.fetch(sql + " LIMIT ?", after_seq, limit) if limit else tx.fetch(sql, after_seq))
        return [_audit_entry(r) for r in rows]

    async def audit_entries_stored_order(self) -> list[audit.AuditEntry]:
        """The log as the database returns it, unsorted by sequence: what `verify` must check, so that
        reordered rows are caught too."""
        async with self._db.transaction() as tx:
            rows = await tx.fetch("SELECT seq, at, actor, action, object_id, prev_hash, hash FROM audit_log")
        return [_audit_entry(r) for r in rows]

    # --- operators ------------------------------------------------------------------------------------

    def _service_key(self) -> DataKey:
        if not self.keys.exists(SERVICE_KEY_ID):
            return self.keys.create(SERVICE_KEY_ID)
        return self.keys.get(SERVICE_KEY_ID)

    def _operator(self, row: Sequence[Any]) -> OperatorRecord:
        secret = bytes.fromhex(self._service_key().decrypt("operators", "totp_secret", row[3]))
        return OperatorRecord(
            username=row[0], role=row[1], password_hash=row[2], totp_secret=secret, created_at=_dt(row[4]),
            disabled_at=_odt(row[5]), totp_last_step=row[6],
        )

    async def add_operator(self, record: OperatorRecord, actor: str, now: dt.datetime) -> None:
        blob = self._service_key().encrypt("operators", "totp_secret", record.totp_secret.hex())
        async with self._db.transaction() as tx:
            if await tx.fetch("SELECT 1 FROM operators WHERE username = ?", record.username):
                raise Conflict(f"there is already an operator {record.username!r}")
            await tx.execute(
                "INSERT INTO operators (username, role, password_hash, totp_secret, created_at) VALUES (?, ?, ?, ?, ?)",
                record.username, record.role, record.password_hash, blob, _utc(record.created_at),
            )
            await self._audit(tx, actor, audit.Action.OPERATOR_CHANGE, f"operator:{record.username}", now)

    async def get_operator(self, username: str) -> OperatorRecord | None:
        async with self._db.transaction() as tx:
            rows = await tx.fetch(
                f"SELECT {_OPERATOR_COLUMNS} FROM operators"
                " WHERE username = ?", username,
            )
        return self._operator(rows[0]) if rows else None

    async def list_operators(self) -> list[OperatorRecord]:
        async with self._db.transaction() as tx:
            rows = await tx.fetch(
                f"SELECT {_OPERATOR_COLUMNS} FROM operators"
                " ORDER BY username"
            )
        return [self._operator(r) for r in rows]

    async def update_operator(
        self, username: str, actor: str, now: dt.datetime, *, role: str | None = None,
        password_hash: str | None = None, totp_secret: bytes | None = None, disabled: bool | None = None,
    ) -> None:
        sets: list[str] = []
        args: list[Any] = []
        if role is not None:
            sets.append("role = ?")
            args.append(role)
        if password_hash is not None:
            sets.append("password_hash = ?")
            args.append(password_hash)
        if totp_secret is not None:
            sets.append("totp_secret = ?")
            args.append(self._service_key().encrypt("operators", "totp_secret", totp_secret.hex()))
        if disabled is not None:
            sets.append("disabled_at = ?")
            args.append(_utc(now) if disabled else None)
        if not sets:
            return
        async with self._db.transaction() as tx:
            if not await tx.execute(f"UPDATE operators SET {', '.join(sets)} WHERE username = ?", *args, username):
                raise NotFound(f"there is no operator {username!r}")
            await self._audit(tx, actor, audit.Action.OPERATOR_CHANGE, f"operator:{username}", now)

    async def use_totp_step(self, username: str, step: int) -> bool:
        """Record that the code of `step` was used; False when that step (or a later one) was used
        already, so one code signs in once, across every node sharing the database."""
        async with self._db.transaction() as tx:
            return bool(await tx.execute(
                "UPDATE operators SET totp_last_step = ? WHERE username = ?"
                " AND (totp_last_step IS NULL OR totp_last_step < ?)",
                step, username, step,
            ))

    # --- breaches -------------------------------------------------------------------------------------

    async def save_breach(
        self, breach_id: str, discovered_at: dt.datetime, document: Mapping[str, Any], actor: str, now: dt.datetime
    ) -> None:
        text = json.dumps(dict(document), sort_keys=True)
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                "UPDATE breaches SET document = ?, discovered_at = ?, updated_at = ? WHERE id = ?",
                text, _utc(discovered_at), _utc(now), breach_id
            )
            if not changed:
                await tx.execute(
                    "INSERT INTO breaches (id, discovered_at, document, updated_at) VALUES (?, ?, ?, ?)",
                    breach_id, _utc(discovered_at), text, _utc(now),
                )
            await self._audit(tx, actor, audit.Action.BREACH_WRITE, f"breach:{breach_id}", now)

    async def get_breach(self, breach_id: str) -> BreachRow | None:
        async with self._db.transaction() as tx:
            rows = await tx.fetch(
                "SELECT id, discovered_at, document, updated_at FROM breaches WHERE id = ?", breach_id
            )
        return _breach(rows[0]) if rows else None

    async def list_breaches(self) -> list[BreachRow]:
        async with self._db.transaction() as tx:
            rows = await tx.fetch("SELECT id, discovered_at, document, updated_at FROM breaches ORDER BY discovered_at")
        return [_breach(r) for r in rows]

    # --- maintenance ------------------------------------------------------------------------------------

    async def compact(self) -> None:
        await self._db.compact(["sessions", "rooms", "visits", "subject_requests"])

    async def close(self) -> None:
        await self._db.close()


def _audit_entry(row: Sequence[Any]) -> audit.AuditEntry:
    return audit.AuditEntry(
        seq=int(row[0]), at=_dt(row[1]), actor=row[2], action=row[3], object_id=row[4], prev_hash=row[5], hash=row[6]
    )


def _breach(row: Sequence[Any]) -> BreachRow:
    return BreachRow(id=row[0], discovered_at=_dt(row[1]), document=json.loads(row[2]), updated_at=_dt(row[3]))


async def run_migrations(tx: Tx, migrations: Sequence[Migration], applied: set[int], keys: KeyStore,
                         now: dt.datetime) -> list[int]:
    """Apply every migration not in `applied`, in order, inside the caller's transaction."""
    done: list[int] = []
    for version, steps in migrations:
        if version in applied:
            continue
        for step in steps:
            if isinstance(step, str):
                await tx.execute(step)
            else:
                await step(tx, keys, now)
        done.append(version)
    return done


async def encrypt_v1_sessions(tx: Tx, keys: KeyStore, now: dt.datetime) -> None:
    """Migration 2's data step: v1 kept IPs and names in plaintext; move them, encrypted, to the new table."""
    rows = await tx.fetch("SELECT id, room_id, ip, name, joined_at, left_at FROM sessions_v1 ORDER BY id")
    rooms = await tx.fetch("SELECT 1 FROM rooms_v1 LIMIT 1")
    if rows or rooms:
        if not await tx.fetch("SELECT 1 FROM controllers WHERE id = ?", DEFAULT_CONTROLLER):
            await tx.execute(
                "INSERT INTO controllers (id, name, created_at, status) VALUES (?, ?, ?, 'active')",
                DEFAULT_CONTROLLER, "Default", _utc(now),
            )
        keys.create(DEFAULT_CONTROLLER)
    await tx.execute(
        "INSERT INTO rooms (id, controller_id, created_at, expires_at)"
        " SELECT id, CAST(? AS TEXT), created_at, expires_at FROM rooms_v1", DEFAULT_CONTROLLER,
    )
    if not rows:
        return
    key = keys.get(DEFAULT_CONTROLLER)
    for r in rows:
        values = {"ip": r[2], "name": r[3]}
        sealed: list[Any] = []
        for column in PERSONAL_COLUMNS:
            value = values.get(column)
            sealed += [None, None] if value is None else [
                key.encrypt("sessions", column, value), key.blind_index(column, value)
            ]
        await tx.execute(
            "INSERT INTO sessions (id, controller_id, room_id, ip, ip_index, name, name_index, phone, phone_index,"
            " email, email_index, joined_at, left_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            r[0], DEFAULT_CONTROLLER, r[1], *sealed, r[4], r[5],
        )


__all__ = [
    "Db", "Dialect", "Migration", "SqlStore", "StoreError", "Tx", "add_months", "encrypt_v1_sessions",
    "retention_cutoff", "run_migrations",
]
