"""metadata_store/sqlite.py: a transaction's BEGIN travels to the SQLite thread with its first statement."""

from __future__ import annotations

import sqlite3
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
