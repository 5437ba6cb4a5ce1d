"""SQLite backend: one file in the data folder, WAL, secure_delete, one worker thread for all queries."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from metadata_store.crypto import KeyStore, default_key_folder
from metadata_store.sql import Dialect, Migration, SqlStore, Tx, encrypt_v1_sessions, run_migrations

T = TypeVar("T")
log = logging.getLogger("kijkmee.store")

_TS = "TEXT"  # timestamps: ISO 8601 UTC text with microseconds, so text order is time order

# Forward-only migrations: (version, steps). Never edit a released one; add the next.
# Version numbers match metadata_store.postgres.MIGRATIONS: the same version is the same schema.
MIGRATIONS: list[Migration] = [
    (
        1,
        [
            f"""CREATE TABLE rooms (
                id TEXT PRIMARY KEY,
                created_at {_TS} NOT NULL,
                expires_at {_TS} NOT NULL
            )""",
            f"""CREATE TABLE sessions (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                room_id TEXT NOT NULL REFERENCES rooms(id),
                ip TEXT NOT NULL,
                name TEXT,
                joined_at {_TS} NOT NULL,
                left_at {_TS}
            )""",
        ],
    ),
    (
        2,
        [
            "ALTER TABLE sessions RENAME TO sessions_v1",
            "ALTER TABLE rooms RENAME TO rooms_v1",
            f"""CREATE TABLE controllers (
                id TEXT NOT NULL PRIMARY KEY,
                name TEXT NOT NULL,
                created_at {_TS} NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('active', 'offboarding', 'deleted')),
                offboarding_at {_TS},
                delete_after {_TS},
                deleted_at {_TS}
            )""",
            f"""CREATE TABLE rooms (
                id TEXT NOT NULL PRIMARY KEY,
                controller_id TEXT NOT NULL REFERENCES controllers(id),
                created_at {_TS} NOT NULL,
                expires_at {_TS} NOT NULL
            )""",
            f"""CREATE TABLE sessions (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                controller_id TEXT NOT NULL REFERENCES controllers(id),
                room_id TEXT NOT NULL REFERENCES rooms(id),
                ip BLOB NOT NULL,
                ip_index TEXT NOT NULL,
                name BLOB,
                name_index TEXT,
                phone BLOB,
                phone_index TEXT,
                email BLOB,
                email_index TEXT,
                joined_at {_TS} NOT NULL,
                left_at {_TS},
                participants INTEGER,
                route TEXT,
                setup_ms INTEGER,
                restricted_at {_TS}
            )""",
            encrypt_v1_sessions,
            "DROP TABLE sessions_v1",
            "DROP TABLE rooms_v1",
            "CREATE INDEX sessions_ip_index ON sessions (controller_id, ip_index, joined_at)",
            "CREATE INDEX sessions_name_index ON sessions (controller_id, name_index, joined_at)",
            "CREATE INDEX sessions_phone_index ON sessions (controller_id, phone_index, joined_at)",
            "CREATE INDEX sessions_email_index ON sessions (controller_id, email_index, joined_at)",
            "CREATE INDEX sessions_joined_at ON sessions (joined_at)",
            "CREATE INDEX sessions_room ON sessions (room_id)",
            "CREATE INDEX rooms_controller ON rooms (controller_id)",
            """CREATE TABLE visits (
                visitor TEXT NOT NULL PRIMARY KEY,
                day TEXT NOT NULL,
                duration_minutes INTEGER,
                participants INTEGER,
                route TEXT,
                setup_ms INTEGER
            )""",
            f"""CREATE TABLE subject_requests (
                id TEXT NOT NULL PRIMARY KEY,
                controller_id TEXT NOT NULL REFERENCES controllers(id),
                kind TEXT NOT NULL,
                received_at {_TS} NOT NULL,
                deadline {_TS} NOT NULL,
                completed_at {_TS},
                handled_by TEXT,
                session_ids TEXT,
                outcome TEXT
            )""",
            f"""CREATE TABLE audit_log (
                seq INTEGER NOT NULL PRIMARY KEY,
                at {_TS} NOT NULL,
                actor TEXT NOT NULL,
                action TEXT NOT NULL,
                object_id TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL
            )""",
            """CREATE TRIGGER audit_log_append_only_update BEFORE UPDATE ON audit_log
                BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
            """CREATE TRIGGER audit_log_append_only_delete BEFORE DELETE ON audit_log
                BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
            f"""CREATE TABLE operators (
                username TEXT NOT NULL PRIMARY KEY,
                role TEXT NOT NULL,
                password_hash TEXT NOT NULL,
                totp_secret BLOB NOT NULL,
                totp_last_step INTEGER,
                created_at {_TS} NOT NULL,
                disabled_at {_TS}
            )""",
            f"""CREATE TABLE breaches (
                id TEXT NOT NULL PRIMARY KEY,
                discovered_at {_TS} NOT NULL,
                document TEXT NOT NULL,
                updated_at {_TS} NOT NULL
            )""",
        ],
    ),
    (
        3,
        [
            "ALTER TABLE rooms ADD COLUMN capacity INTEGER NOT NULL DEFAULT 3",
            "ALTER TABLE rooms ADD COLUMN relay_only INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE rooms ADD COLUMN ask TEXT NOT NULL DEFAULT 'name'",
            "ALTER TABLE rooms ADD COLUMN embed_origins TEXT",
            "ALTER TABLE rooms ADD COLUMN extend INTEGER NOT NULL DEFAULT 1",
            f"""CREATE TABLE api_keys (
                id TEXT NOT NULL PRIMARY KEY,
                controller_id TEXT NOT NULL REFERENCES controllers(id),
                secret_hash TEXT NOT NULL,
                label TEXT NOT NULL,
                created_at {_TS} NOT NULL,
                revoked_at {_TS}
            )""",
            "CREATE INDEX api_keys_controller ON api_keys (controller_id)",
        ],
    ),
]


def _rounded_minutes(start: str, end: str) -> str:
    """Minutes between two timestamp columns, to the nearest 5, halves away from zero as PostgreSQL's
    numeric round does. In exact integer microseconds: julianday's float is off by some microseconds,
    so a duration of exactly 12.5 minutes came out 10 here and 15 on PostgreSQL."""
    micros = (
        f"((CAST(strftime('%s', {end}) AS INTEGER) - CAST(strftime('%s', {start}) AS INTEGER)) * 1000000"
        f" + CAST(substr({end}, 21, 6) AS INTEGER) - CAST(substr({start}, 21, 6) AS INTEGER))"  # stored .ffffff
    )
    return f"(CASE WHEN {micros} < 0 THEN -5 ELSE 5 END * ((abs({micros}) + 150000000) / 300000000))"


DIALECT = Dialect(
    name="sqlite",
    day=lambda column: f"substr({column}, 1, 10)",
    rounded_minutes=lambda start, end: _rounded_minutes(start, end),
    random_hex="lower(hex(randomblob(16)))",
    audit_lock=None,  # BEGIN IMMEDIATE already holds the database's one write lock
)


def _param(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("store times must be timezone-aware")
        return value.astimezone(dt.UTC).isoformat(timespec="microseconds")
    return value


class _SqliteTx:
    """A transaction's statements. BEGIN IMMEDIATE goes to the worker thread together with the first
    statement, not on a trip of its own (nothing else can run in between: the transaction holds the
    database's lock): one thread round trip less per transaction, and a join makes three transactions
    (about 10 % fewer server instructions per join, bench/signaling_load)."""

    def __init__(self, db: SqliteDb) -> None:
        self._db = db
        # Whether BEGIN has been handed to the thread (maybe not yet run there): set here, before the
        # await, so a body cancelled while its first statement waits still rolls back. The thread runs
        # its work in order, so that ROLLBACK comes after the BEGIN.
        self.begun = False

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self.begun:
            return await self._db.run(work)
        self.begun = True

        def begin_then(c: sqlite3.Connection) -> T:
            c.execute("BEGIN IMMEDIATE")
            return work(c)

        return await self._db.run(begin_then)

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        params = tuple(_param(a) for a in args)
        return await self._run(lambda c: c.execute(sql, params).fetchall())

    async def execute(self, sql: str, *args: Any) -> int:
        params = tuple(_param(a) for a in args)
        return await self._run(lambda c: c.execute(sql, params).rowcount)


def _rollback(c: sqlite3.Connection) -> None:
    """ROLLBACK, unless BEGIN itself failed (the database was locked past the timeout): then there is none."""
    if c.in_transaction:
        c.execute("ROLLBACK")


class SqliteDb:
    """One connection used from one worker thread; an asyncio lock keeps transactions whole."""

    dialect = DIALECT

    def __init__(self, connection: sqlite3.Connection, executor: ThreadPoolExecutor) -> None:
        self._connection = connection
        self._executor = executor
        self._lock = asyncio.Lock()

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, work, self._connection)

    @asynccontextmanager
    async def transaction(self, snapshot: bool = False) -> AsyncIterator[_SqliteTx]:
        # One connection, one transaction at a time: every transaction already sees one moment. A body
        # without statements touches nothing, so it has nothing to begin or commit.
        async with self._lock:
            tx = _SqliteTx(self)
            try:
                yield tx
            except BaseException:
                if tx.begun:
                    await self.run(_rollback)
                raise
            if tx.begun:
                await self.run(lambda c: c.execute("COMMIT"))

    async def schema_version(self, tx: Tx) -> int:
        return int((await tx.fetch("PRAGMA user_version"))[0][0])

    async def after_restore(self, tx: Tx) -> None:
        """Nothing to do: AUTOINCREMENT moves past explicitly inserted ids by itself."""

    async def compact(self, tables: Sequence[str], full: bool = False) -> None:
        """secure_delete has already zeroed the deleted cells and freed pages. The incremental vacuum
        gives the free pages back (auto_vacuum=INCREMENTAL; a full VACUUM rewrites the whole file, which
        costs seconds per call at a million rows: `full` only for one-off cases), and the TRUNCATE
        checkpoint empties the WAL, where older page images would otherwise linger. A checkpoint that a
        reader blocks is retried; if it stays blocked the WAL is left for the next compaction."""
        async with self._lock:
            if full:
                await self.run(lambda c: c.execute("VACUUM"))
            else:
                # executescript: a plain execute of this pragma frees only one page in Python's sqlite3
                await self.run(lambda c: c.executescript("PRAGMA incremental_vacuum;"))
            for _ in range(40):
                busy = await self.run(lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
                if not busy:
                    return
                await asyncio.sleep(0.05)
            log.warning("the WAL could not be truncated now (a reader held it); the next compaction retries")

    async def close(self) -> None:
        async with self._lock:
            await self.run(lambda c: c.close())
        self._executor.shutdown(wait=True)


class SQLiteStore(SqlStore):
    """The metadata store on a SQLite file. Open with `await SQLiteStore.open(path, keys)`."""

    @classmethod
    async def open(cls, path: Path, keys: KeyStore | None = None, now: dt.datetime | None = None) -> SQLiteStore:
        """Open (creating and migrating) the database. `keys` defaults to `<folder>-keys` beside its folder."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys = keys or KeyStore(default_key_folder(path.parent))
        # Personal data: the file is the owner's alone. SQLite gives its -wal and -shm files the
        # main file's permissions, so creating it 0600 covers those too.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kijkmee-sqlite")

        def connect() -> sqlite3.Connection:
            connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            # Before any table exists, so a new file frees pages incrementally (see SqliteDb.compact);
            # an older file is converted once below.
            connection.execute("PRAGMA auto_vacuum=INCREMENTAL")
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA secure_delete=ON")
            connection.execute("PRAGMA foreign_keys=ON")
            connection.execute("PRAGMA synchronous=NORMAL")
            return connection

        loop = asyncio.get_running_loop()
        connection = await loop.run_in_executor(executor, connect)
        db = SqliteDb(connection, executor)
        try:
            converted = await db.run(lambda c: c.execute("PRAGMA auto_vacuum").fetchone()[0]) != 2
            if await _migrate(db, keys, now or dt.datetime.now(dt.UTC)) or converted:
                # Migration 2 re-wrote v1's plaintext IPs and names encrypted; their old pages must not
                # wait for some later checkpoint to leave the file. A file made before auto_vacuum was
                # set becomes incremental with this one full VACUUM.
                await db.compact((), full=True)
        except BaseException:
            await db.close()
            raise
        return cls(db, keys)


async def _migrate(db: SqliteDb, keys: KeyStore, now: dt.datetime) -> list[int]:
    """Apply pending migrations in one write transaction; the version is read inside it, so two
    processes opening a fresh file at once cannot both create the tables. Returns the versions applied."""
    async with db.transaction() as tx:
        current = int((await tx.fetch("PRAGMA user_version"))[0][0])
        applied = {version for version, _ in MIGRATIONS if version <= current}
        done = await run_migrations(tx, MIGRATIONS, applied, keys, now)
        if done:
            await tx.execute(f"PRAGMA user_version = {int(done[-1])}")
    return done
