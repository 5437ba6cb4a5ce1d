"""SQLite backend: one file in the data folder, WAL, secure_delete, one worker thread for all queries."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from metadata_store.store import RoomRecord, SessionRecord

T = TypeVar("T")

# Forward-only migrations: (version, statements). Never edit a released one; add the next.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE rooms (
                id TEXT PRIMARY KEY,
                created_at TEXT NOT NULL,
                expires_at TEXT NOT NULL
            )""",
            """CREATE TABLE sessions (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                room_id TEXT NOT NULL REFERENCES rooms(id),
                ip TEXT NOT NULL,
                name TEXT,
                joined_at TEXT NOT NULL,
                left_at TEXT
            )""",
        ],
    ),
]


def _ts(value: dt.datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("store times must be timezone-aware")
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _dt(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


class SQLiteStore:
    """MetadataStore on a SQLite file. Open with `await SQLiteStore.open(path)`."""

    def __init__(self, connection: sqlite3.Connection, executor: ThreadPoolExecutor) -> None:
        self._db = connection
        self._executor = executor

    @classmethod
    async def open(cls, path: Path) -> SQLiteStore:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Personal data: the file is the owner's alone. SQLite gives its -wal and -shm files the
        # main file's permissions, so creating it 0600 covers those too.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kijkmee-sqlite")

        def connect() -> sqlite3.Connection:
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA secure_delete=ON")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA synchronous=NORMAL")
            _migrate(db)
            return db

        loop = asyncio.get_running_loop()
        connection = await loop.run_in_executor(executor, connect)
        return cls(connection, executor)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, work, self._db)

    async def create_room(self, room_id: str, now: dt.datetime, expires_at: dt.datetime) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT INTO rooms (id, created_at, expires_at) VALUES (?, ?, ?)",
                (room_id, _ts(now), _ts(expires_at)),
            )
        )

    async def get_room(self, room_id: str) -> RoomRecord | None:
        row = await self._run(
            lambda db: db.execute(
                "SELECT id, created_at, expires_at FROM rooms WHERE id = ?", (room_id,)
            ).fetchone()
        )
        if row is None:
            return None
        return RoomRecord(id=row[0], created_at=_dt(row[1]), expires_at=_dt(row[2]))  # type: ignore[arg-type]

    async def extend_room(self, room_id: str, expires_at: dt.datetime) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE rooms SET expires_at = ? WHERE id = ? AND expires_at < ?",
                (_ts(expires_at), room_id, _ts(expires_at)),
            )
        )

    async def open_session(self, room_id: str, ip: str, name: str | None, now: dt.datetime) -> int:
        def insert(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                "INSERT INTO sessions (room_id, ip, name, joined_at) VALUES (?, ?, ?, ?)",
                (room_id, ip, name, _ts(now)),
            )
            return int(cursor.lastrowid or 0)

        return await self._run(insert)

    async def close_session(self, session_id: int, now: dt.datetime) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE sessions SET left_at = ? WHERE id = ? AND left_at IS NULL", (_ts(now), session_id)
            )
        )

    async def list_sessions(self) -> list[SessionRecord]:
        rows: list[Any] = await self._run(
            lambda db: db.execute(
                "SELECT id, room_id, ip, name, joined_at, left_at FROM sessions ORDER BY id"
            ).fetchall()
        )
        return [
            SessionRecord(
                id=r[0], room_id=r[1], ip=r[2], name=r[3], joined_at=_dt(r[4]), left_at=_dt(r[5])  # type: ignore[arg-type]
            )
            for r in rows
        ]

    async def close(self) -> None:
        await self._run(lambda db: db.close())
        self._executor.shutdown(wait=True)


def _migrate(db: sqlite3.Connection) -> None:
    """Apply pending migrations in one write transaction; the version is read inside it, so two
    processes opening a fresh file at once cannot both create the tables."""
    db.execute("BEGIN IMMEDIATE")
    try:
        current = db.execute("PRAGMA user_version").fetchone()[0]
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            for statement in statements:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {int(version)}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
