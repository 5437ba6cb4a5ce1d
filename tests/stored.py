"""Reading what kijkmee stored, as a person with the files (and the key folder) would."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from metadata_store.crypto import KeyStore, default_key_folder
from metadata_store.store import DEFAULT_CONTROLLER


def session_rows(data_dir: Path) -> list[tuple[object, ...]]:
    """(room, ip, name, closed) of every session row in the data folder's SQLite file, in order,
    decrypted with the default controller's key from the data folder's key folder."""
    key = KeyStore(default_key_folder(data_dir)).get(DEFAULT_CONTROLLER)
    with closing(sqlite3.connect(data_dir / "kijkmee.sqlite3")) as db:
        rows = db.execute("SELECT room_id, ip, name, left_at IS NOT NULL FROM sessions ORDER BY id").fetchall()
    return [
        (
            room,
            key.decrypt("sessions", "ip", ip),
            None if name is None else key.decrypt("sessions", "name", name),
            closed,
        )
        for room, ip, name, closed in rows
    ]


def session_telemetry(data_dir: Path) -> list[tuple[object, ...]]:
    """(route, setup_ms, participants) of every session row, in order: what the browsers reported."""
    with closing(sqlite3.connect(data_dir / "kijkmee.sqlite3")) as db:
        return db.execute("SELECT route, setup_ms, participants FROM sessions ORDER BY id").fetchall()
