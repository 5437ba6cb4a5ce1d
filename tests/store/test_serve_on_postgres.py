"""`kijkmee serve` with database_url keeps its session rows in PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from kijkmee.config import ConfigError, ServeConfig
from kijkmee.serve import running
from metadata_store.crypto import KeyStore, default_key_folder
from metadata_store.store import DEFAULT_CONTROLLER
from tests.integration.sio_helpers import Participant, create_room
from tests.store.conftest import fresh_postgres_database


async def test_a_join_is_recorded_in_postgres(tmp_path: Path) -> None:
    async with fresh_postgres_database() as dsn:
        config = ServeConfig(port=0, turn_port=0, turns_port=0, data_dir=tmp_path / "d", database_url=dsn).validate()
        async with running(config, say=False) as live:
            room = await create_room(live.url)
            person = await Participant().connect(live.url)
            try:
                assert (await person.join(room, "Anna"))["ok"]
            finally:
                await person.close()
        db = await asyncpg.connect(dsn)
        try:
            rows = await db.fetch("SELECT room_id, ip, name, left_at IS NOT NULL AS closed FROM sessions")
        finally:
            await db.close()
        # At rest the address and the name are ciphertext under the default controller's key ...
        [(room_id, ip, name, closed)] = [tuple(r) for r in rows]
        assert (room_id, closed) == (room, True)
        assert b"127.0.0.1" not in ip and b"Anna" not in name
        key = KeyStore(default_key_folder(tmp_path / "d")).get(DEFAULT_CONTROLLER)
        assert (key.decrypt("sessions", "ip", ip), key.decrypt("sessions", "name", name)) == ("127.0.0.1", "Anna")
        # ... and nothing went to a SQLite file instead.
        assert not (tmp_path / "d" / "kijkmee.sqlite3").exists()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://db/kijkmee", "must start with postgresql://"),
        ("postgresql://kijkmee@db.example.nl/kijkmee", "sslmode=verify-full"),
        ("postgresql://kijkmee@db.example.nl/kijkmee?sslmode=require", "sslmode=verify-full"),
    ],
)
def test_database_url_must_be_postgres_with_tls_to_remote_hosts(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServeConfig(database_url=url).validate()
    ServeConfig(database_url="postgresql://kijkmee@db.example.nl/kijkmee?sslmode=verify-full").validate()
    ServeConfig(database_url="postgresql://postgres@127.0.0.1:5432/kijkmee").validate()
