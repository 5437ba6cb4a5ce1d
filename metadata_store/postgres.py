"""PostgreSQL backend: an asyncpg pool, for several kijkmee nodes sharing one database.

TLS to the server: pass `ssl=` to `PostgresStore.open`, or put `sslmode` (and `sslrootcert`,
`sslcert`, `sslkey`) in the DSN. `ssl` takes what asyncpg's `connect` takes: an `ssl.SSLContext`,
or one of the libpq modes "disable", "allow", "prefer", "require", "verify-ca", "verify-full";
when given it wins over the DSN. With neither, asyncpg falls back to `PGSSLMODE` and then to
"prefer", which silently continues without TLS when the server offers none. Sessions hold IP
addresses, so for any server off this machine use `sslmode=verify-full` with the operator's CA in
`sslrootcert` (or an `SSLContext` that verifies the server's name).
"""

from __future__ import annotations

import datetime as dt
import ssl as ssl_module
from typing import Any, Literal

import asyncpg

from metadata_store.store import RoomRecord, SessionRecord

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

# Forward-only migrations: (version, statements). Never edit a released one; add the next.
# Version numbers match metadata_store.sqlite.MIGRATIONS: the same version is the same schema.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE rooms (
                id TEXT PRIMARY KEY,
                created_at TIMESTAMPTZ NOT NULL,
                expires_at TIMESTAMPTZ NOT NULL
            )""",
            """CREATE TABLE sessions (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                room_id TEXT NOT NULL REFERENCES rooms(id),
                ip TEXT NOT NULL,
                name TEXT,
                joined_at TIMESTAMPTZ NOT NULL,
                left_at TIMESTAMPTZ
            )""",
        ],
    ),
]

BOOKKEEPING_TABLES = frozenset({"schema_migrations"})
"""Tables that record which migrations ran and nothing about anyone.

They are the only tables allowed beside the ones `metadata_store.schema.TABLES` declares, and the
schema-equality test excludes exactly these. (SQLite keeps the same fact in `PRAGMA user_version`,
so it needs no table.)
"""

_BOOKKEEPING_DDL = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL
)"""

MIGRATION_LOCK_KEY = 0x6B696A6B6D6565  # "kijkmee" in ASCII: the advisory lock that serialises migrations


def _utc(value: dt.datetime) -> dt.datetime:
    # asyncpg would read a naive datetime as local time; refuse it, as the SQLite backend does.
    if value.tzinfo is None:
        raise ValueError("store times must be timezone-aware")
    return value.astimezone(dt.UTC)


class PostgresStore:
    """MetadataStore on PostgreSQL. Open with `await PostgresStore.open(dsn)`; `close()` closes the pool."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @classmethod
    async def open(
        cls,
        dsn: str,
        min_size: int = 1,
        max_size: int = 10,
        *,
        ssl: ssl_module.SSLContext | SslMode | None = None,
    ) -> PostgresStore:
        """Connect a pool to `dsn` and bring the schema up to date.

        Safe when several nodes start at once: migrations run under a transaction-scoped advisory lock.
        """
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            ssl=ssl,
            server_settings={"application_name": "kijkmee"},
        )
        try:
            async with pool.acquire() as connection:
                await _migrate(connection)
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    async def create_room(self, room_id: str, now: dt.datetime, expires_at: dt.datetime) -> None:
        await self._pool.execute(
            "INSERT INTO rooms (id, created_at, expires_at) VALUES ($1, $2, $3)",
            room_id,
            _utc(now),
            _utc(expires_at),
        )

    async def get_room(self, room_id: str) -> RoomRecord | None:
        row = await self._pool.fetchrow("SELECT id, created_at, expires_at FROM rooms WHERE id = $1", room_id)
        if row is None:
            return None
        return RoomRecord(id=row["id"], created_at=row["created_at"], expires_at=row["expires_at"])

    async def extend_room(self, room_id: str, expires_at: dt.datetime) -> None:
        await self._pool.execute(
            "UPDATE rooms SET expires_at = $1 WHERE id = $2 AND expires_at < $1", _utc(expires_at), room_id
        )

    async def open_session(self, room_id: str, ip: str, name: str | None, now: dt.datetime) -> int:
        session_id = await self._pool.fetchval(
            "INSERT INTO sessions (room_id, ip, name, joined_at) VALUES ($1, $2, $3, $4) RETURNING id",
            room_id,
            ip,
            name,
            _utc(now),
        )
        return int(session_id)

    async def close_session(self, session_id: int, now: dt.datetime) -> None:
        await self._pool.execute(
            "UPDATE sessions SET left_at = $1 WHERE id = $2 AND left_at IS NULL", _utc(now), session_id
        )

    async def list_sessions(self) -> list[SessionRecord]:
        rows = await self._pool.fetch("SELECT id, room_id, ip, name, joined_at, left_at FROM sessions ORDER BY id")
        return [
            SessionRecord(
                id=int(r["id"]),
                room_id=r["room_id"],
                ip=r["ip"],
                name=r["name"],
                joined_at=r["joined_at"],
                left_at=r["left_at"],
            )
            for r in rows
        ]

    async def close(self) -> None:
        await self._pool.close()


async def _migrate(connection: Any) -> None:
    """Apply every pending migration in one transaction, one node at a time.

    The advisory lock is taken before anything else and released at commit, so a second node waits,
    then sees the first node's tables and versions. READ COMMITTED is forced so that each statement
    after the lock sees what the other node committed, even where the server's default is stricter.
    """
    async with connection.transaction(isolation="read_committed"):
        await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await connection.execute(_BOOKKEEPING_DDL)
        applied = {int(r["version"]) for r in await connection.fetch("SELECT version FROM schema_migrations")}
        for version, statements in MIGRATIONS:
            if version in applied:
                continue
            for statement in statements:
                await connection.execute(statement)
            await connection.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, clock_timestamp())", version
            )
