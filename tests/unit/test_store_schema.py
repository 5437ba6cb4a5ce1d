"""The SQLite store: the live schema equals the declared allowlist; sessions open and close."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

from metadata_store import TABLES
from metadata_store.schema import PERSONAL, Protection
from metadata_store.sqlite import SQLiteStore
from metadata_store.store import DEFAULT_CONTROLLER

T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)


async def test_live_columns_equal_the_declaration(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "k.sqlite3")
    await store.close()
    with sqlite3.connect(tmp_path / "k.sqlite3") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")} - {"sqlite_sequence"}
        assert tables == set(TABLES)
        for table, columns in TABLES.items():
            live = [(r[1], r[3] == 0 and r[5] == 0) for r in db.execute(f"PRAGMA table_info({table})")]
            assert live == [(c.name, c.nullable) for c in columns]
    # Personal data lives in the sessions table only, each value encrypted with a blind index beside it.
    personal = {(t, c.name, c.protection) for t, cols in TABLES.items() for c in cols if c.data_class in PERSONAL}
    assert personal == {
        ("sessions", name, protection)
        for base in ("ip", "name", "phone", "email")
        for name, protection in ((base, Protection.ENCRYPTED), (f"{base}_index", Protection.KEYED_HASH))
    }


async def test_the_database_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "data" / "k.sqlite3")
    await store.ensure_controller(DEFAULT_CONTROLLER, "Default", T0)
    try:
        await store.create_room("r" * 22, T0, T0 + dt.timedelta(hours=1))
        for name in ("k.sqlite3", "k.sqlite3-wal", "k.sqlite3-shm"):
            assert (tmp_path / "data" / name).stat().st_mode & 0o077 == 0, name
        assert (tmp_path / "data").stat().st_mode & 0o077 == 0
    finally:
        await store.close()


async def test_sessions_open_and_close(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "k.sqlite3")
    await store.ensure_controller(DEFAULT_CONTROLLER, "Default", T0)
    try:
        await store.create_room("r" * 22, T0, T0 + dt.timedelta(hours=24))
        first = await store.open_session("r" * 22, "192.0.2.7", None, T0)
        second = await store.open_session("r" * 22, "2001:db8::1", "Anna", T0)
        await store.close_session(first, T0 + dt.timedelta(minutes=5))
        await store.close_session(first, T0 + dt.timedelta(minutes=9))  # closing twice keeps the first time
        rows = await store.list_sessions()
        assert [(r.id, r.ip, r.name, r.left_at) for r in rows] == [
            (first, "192.0.2.7", None, T0 + dt.timedelta(minutes=5)),
            (second, "2001:db8::1", "Anna", None),
        ]
        await store.extend_room("r" * 22, T0 + dt.timedelta(hours=1))  # never earlier
        room = await store.get_room("r" * 22)
        assert room is not None and room.expires_at == T0 + dt.timedelta(hours=24)
        assert await store.get_room("x" * 22) is None
    finally:
        await store.close()
