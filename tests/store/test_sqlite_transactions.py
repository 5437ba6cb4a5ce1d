"""metadata_store/sqlite.py: a transaction's BEGIN travels to the SQLite thread with its first statement."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from metadata_store.sqlite import SQLiteStore


async def test_a_transaction_takes_one_thread_trip_per_statement_and_one_to_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "data" / "kijkmee.sqlite3"
    store = await SQLiteStore.open(path)
    db = store._db
    trips: list[int] = []
    run = db.run

    async def counted(work: Callable[[sqlite3.Connection], Any]) -> Any:
        trips.append(1)
        return await run(work)

    monkeypatch.setattr(db, "run", counted)
    try:
        assert await store.get_room("A" * 22) is None
        assert len(trips) == 2  # BEGIN IMMEDIATE with the SELECT, then COMMIT (was 3 trips)

        trips.clear()
        async with db.transaction():
            pass
        assert trips == []  # nothing to begin or commit

        # The write lock is still held from the first statement on, and a failure rolls back.
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        with pytest.raises(RuntimeError):
            async with db.transaction() as tx:
                await tx.execute("CREATE TABLE scratch (x INTEGER)")
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
                raise RuntimeError("the body fails")
        assert other.execute("SELECT name FROM sqlite_master WHERE name = 'scratch'").fetchall() == []
        other.execute("BEGIN IMMEDIATE")  # free again
        other.execute("ROLLBACK")
        other.close()
    finally:
        monkeypatch.undo()
        await store.close()


async def test_a_transaction_cancelled_during_its_first_statement_leaves_nothing_open(tmp_path: Path) -> None:
    """The BEGIN travels with the first statement. A body cancelled while that statement waits for the
    store's thread, or while the thread runs it, must leave no transaction open (the next one would fail
    with "cannot start a transaction within a transaction") and nothing written."""
    store = await SQLiteStore.open(tmp_path / "data" / "kijkmee.sqlite3")
    db = store._db

    def slow(value: int) -> int:
        time.sleep(0.3)
        return value

    try:
        await db.run(lambda c: c.execute("CREATE TABLE scratch (x INTEGER)"))
        await db.run(lambda c: c.create_function("slow", 1, slow))

        async def body(sql: str) -> None:
            async with db.transaction() as tx:
                await tx.execute(sql)

        # 1. Waiting behind other work in the thread; 2. running in the thread when the cancel comes.
        busy = asyncio.ensure_future(db.run(lambda c: time.sleep(0.3)))
        for sql in ("INSERT INTO scratch VALUES (1)", "INSERT INTO scratch VALUES (slow(2))"):
            task = asyncio.ensure_future(body(sql))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await busy
            async with db.transaction() as tx:
                assert await tx.fetch("SELECT count(*) FROM scratch") == [(0,)]
            assert await db.run(lambda c: c.in_transaction) is False
    finally:
        await store.close()
