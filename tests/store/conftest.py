"""Every SqlStore backend, each on a fresh database, for the one contract suite.

`backend` is parametrized over SQLite and PostgreSQL; `store` is a store opened on it. PostgreSQL
tests get a database of their own (created, then dropped WITH (FORCE)) on the server at
127.0.0.1:5432; without that server they skip locally and fail on CI (CI=true), which must run them.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from metadata_store.crypto import KeyStore
from metadata_store.postgres import BOOKKEEPING_TABLES, PostgresStore
from metadata_store.sql import SqlStore
from metadata_store.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from metadata_store.sqlite import SQLiteStore
from metadata_store.store import DEFAULT_CONTROLLER
from tests.conftest import IN_CI

POSTGRES_SERVER = "127.0.0.1:5432"
ADMIN_DSN = f"postgresql://postgres@{POSTGRES_SERVER}/postgres"

# Tables the schema-equality test ignores, and why. Nothing else may be in the live database.
# SQLite: sqlite_sequence is SQLite's own (AUTOINCREMENT counters); the migration version lives in
# PRAGMA user_version, not a table. PostgreSQL: the store's bookkeeping table (schema_migrations).
IGNORED_TABLES = {"sqlite": frozenset({"sqlite_sequence"}), "postgres": BOOKKEEPING_TABLES}

LiveColumn = tuple[str, str, bool]
"""(name, type as the database reports it, nullable)"""

_PLACEHOLDER = re.compile(r"\?")


@dataclass(frozen=True)
class RawDb:
    """The database as someone with direct access sees it: the driver, no store, no key in between.

    Statements use ``?`` placeholders on both backends; timestamps are passed as aware datetimes and
    stored the way the store stores them (ISO 8601 UTC text in SQLite)."""

    kind: str
    path: Path | None = None
    """The SQLite file (None for PostgreSQL)."""
    dsn: str | None = None
    """The PostgreSQL database (None for SQLite)."""

    def _sqlite(self) -> sqlite3.Connection:
        assert self.path is not None
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    @staticmethod
    def _sqlite_param(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return value.astimezone(dt.UTC).isoformat(timespec="microseconds")
        return value

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            with closing(self._sqlite()) as db:
                return [tuple(r) for r in db.execute(sql, tuple(self._sqlite_param(a) for a in args)).fetchall()]
        db = await asyncpg.connect(self.dsn)
        try:
            return [tuple(r) for r in await db.fetch(_numbered(sql), *args)]
        finally:
            await db.close()

    async def execute(self, *statements: str | tuple[str, Sequence[Any]]) -> None:
        """Run statements (text, or (text, arguments)) in order, each committed on its own."""
        if self.kind == "sqlite":
            with closing(self._sqlite()) as db:
                for statement in statements:
                    sql, args = (statement, ()) if isinstance(statement, str) else statement
                    db.execute(sql, tuple(self._sqlite_param(a) for a in args))
            return
        db = await asyncpg.connect(self.dsn)
        try:
            for statement in statements:
                sql, args = (statement, ()) if isinstance(statement, str) else statement
                await db.execute(_numbered(sql), *args)
        finally:
            await db.close()

    async def stored_bytes(self) -> bytes:
        """What the server keeps on disk for the sessions table, as bytes: SQLite's file and WAL; for
        PostgreSQL, after a CHECKPOINT, the files of the sessions table and of every index on it."""
        if self.kind == "sqlite":
            return self.file_bytes()
        db = await asyncpg.connect(self.dsn)
        try:
            await db.execute("CHECKPOINT")
            paths = await db.fetch(
                "SELECT pg_relation_filepath(c.oid) AS path FROM pg_class c WHERE c.oid = 'sessions'::regclass"
                " OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'sessions'::regclass)"
            )
            return b"".join([await db.fetchval("SELECT pg_read_binary_file($1)", r["path"]) for r in paths])
        finally:
            await db.close()

    def file_bytes(self) -> bytes:
        """SQLite: the database file followed by its write-ahead log, as they are on disk now."""
        assert self.path is not None
        wal = self.path.with_name(self.path.name + "-wal")
        return self.path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def _numbered(sql: str) -> str:
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


@dataclass(frozen=True)
class Backend:
    kind: str
    """"sqlite" or "postgres"."""
    open_store: Callable[[], Awaitable[SqlStore]]
    """Open one more store on this backend's database (running its migrations)."""
    live_tables: Callable[[], Awaitable[dict[str, list[LiveColumn]]]]
    """Columns of every table in the live database but the ignored ones, in table order."""
    applied_versions: Callable[[], Awaitable[list[int]]]
    """Migration versions the database records as applied."""
    keys: KeyStore
    """The key folder the stores of this backend share."""
    raw: RawDb
    """The same database through its driver alone, as an attacker or a backup would see it."""


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        yield _sqlite_backend(tmp_path / "data" / "kijkmee.sqlite3", KeyStore(tmp_path / "keys"))
    else:
        async with fresh_postgres_database() as dsn:
            yield _postgres_backend(dsn, KeyStore(tmp_path / "keys"))


@pytest.fixture
def sqlite_backend(tmp_path: Path) -> Backend:
    """SQLite alone, for what only a file on disk can show (bytes left in the file or its WAL)."""
    return _sqlite_backend(tmp_path / "data" / "kijkmee.sqlite3", KeyStore(tmp_path / "keys"))


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[SqlStore]:
    opened = await backend.open_store()
    await opened.ensure_controller(DEFAULT_CONTROLLER, "Default", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def postgres_dsn() -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database, for the tests that only concern that backend."""
    async with fresh_postgres_database() as dsn:
        yield dsn


@asynccontextmanager
async def fresh_postgres_database() -> AsyncIterator[str]:
    try:
        admin = await asyncpg.connect(ADMIN_DSN, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as error:
        message = f"PostgreSQL not reachable at {POSTGRES_SERVER} ({type(error).__name__}: {error})"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    name = f"kijkmee_test_{uuid.uuid4().hex}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql://postgres@{POSTGRES_SERVER}/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _sqlite_backend(path: Path, keys: KeyStore) -> Backend:
    async def live_tables() -> dict[str, list[LiveColumn]]:
        with closing(sqlite3.connect(path)) as db:
            names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            # table_info rows: (cid, name, type, notnull, default, pk). A PRIMARY KEY column counts as
            # NOT NULL, as in tests/unit/test_store_schema.py (SQLite itself only enforces that for
            # INTEGER PRIMARY KEY; see the report on rooms.id).
            return {
                table: [(r[1], r[2], r[3] == 0 and r[5] == 0) for r in db.execute(f"PRAGMA table_info({table})")]
                for table in names
                if table not in IGNORED_TABLES["sqlite"]
            }

    async def applied_versions() -> list[int]:
        with closing(sqlite3.connect(path)) as db:
            current = int(db.execute("PRAGMA user_version").fetchone()[0])
        return [version for version, _ in SQLITE_MIGRATIONS if version <= current]

    return Backend(
        "sqlite", lambda: SQLiteStore.open(path, keys), live_tables, applied_versions, keys, RawDb("sqlite", path=path)
    )


def _postgres_backend(dsn: str, keys: KeyStore) -> Backend:
    async def live_tables() -> dict[str, list[LiveColumn]]:
        db = await asyncpg.connect(dsn)
        try:
            tables = await db.fetch(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema() ORDER BY table_name"
            )
            columns = await db.fetch(
                "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns"
                " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
            )
        finally:
            await db.close()
        live: dict[str, list[LiveColumn]] = {
            t["table_name"]: [] for t in tables if t["table_name"] not in IGNORED_TABLES["postgres"]
        }
        for c in columns:
            if c["table_name"] in live:
                live[c["table_name"]].append((c["column_name"], c["data_type"], c["is_nullable"] == "YES"))
        return live

    async def applied_versions() -> list[int]:
        db = await asyncpg.connect(dsn)
        try:
            return [r["version"] for r in await db.fetch("SELECT version FROM schema_migrations ORDER BY version")]
        finally:
            await db.close()

    return Backend(
        "postgres", lambda: PostgresStore.open(dsn, keys, max_size=5), live_tables, applied_versions, keys,
        RawDb("postgres", dsn=dsn),
    )
