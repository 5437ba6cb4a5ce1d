"""`kijkmee serve` runs the retention and offboarding jobs by itself, at start and on its interval."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from kijkmee.config import ServeConfig
from kijkmee.serve import running
from kijkmee.storage import open_store

ROOM = "j" * 22


async def test_serve_anonymises_old_sessions_and_purges_ended_controllers_without_being_asked(tmp_path: Path) -> None:
    config = ServeConfig(port=0, turn_port=0, turns_port=0, data_dir=tmp_path / "data").validate()
    now = dt.datetime.now(dt.UTC)
    long_ago = now - dt.timedelta(days=100)
    store = await open_store(config)
    try:
        await store.create_room(ROOM, long_ago, now + dt.timedelta(hours=1))
        old = await store.open_session(ROOM, "192.0.2.7", "Anna", long_ago)
        await store.close_session(old, long_ago + dt.timedelta(minutes=12))
        recent = await store.open_session(ROOM, "192.0.2.8", "Bob", now - dt.timedelta(days=1))
        await store.ensure_controller("leaving", "Leaving B.V.", now)
        await store.start_offboarding("leaving", now, "admin", now)
    finally:
        await store.close()
    async with running(config, say=False):
        store = await open_store(config)
        try:
            for _ in range(100):
                sessions = await store.list_sessions()
                leaving = await store.get_controller("leaving")
                if [s.id for s in sessions] == [recent] and leaving is not None and leaving.status == "deleted":
                    break
                await asyncio.sleep(0.05)
            assert [s.id for s in await store.list_sessions()] == [recent]
            [visit] = await store.list_visits()
            assert (visit.day, visit.duration_minutes) == (long_ago.date().isoformat(), 10)
            assert (await store.get_controller("leaving")).status == "deleted"  # type: ignore[union-attr]
            assert not store.keys.exists("leaving")
        finally:
            await store.close()
