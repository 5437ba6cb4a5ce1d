"""Backups on both backends: an encrypted snapshot, a restore drill, and erased subjects staying erased."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from metadata_store import audit
from metadata_store.backup import MAGIC, BackupError, DeletionLedger, read_backup
from metadata_store.crypto import KeyStore
from metadata_store.postgres import PostgresStore
from metadata_store.service import DataHandling, SubjectQuery
from metadata_store.sql import SqlStore
from metadata_store.sqlite import SQLiteStore
from metadata_store.store import DEFAULT_CONTROLLER
from tests.store.conftest import Backend, fresh_postgres_database

T0 = dt.datetime(2026, 11, 20, 10, 0, tzinfo=dt.UTC)
ROOM, OTHER_ROOM = "r" * 22, "q" * 22

Opener = Callable[[], Awaitable[SqlStore]]


@asynccontextmanager
async def empty_target(backend: Backend, tmp_path: Path, keys: KeyStore) -> AsyncIterator[SqlStore]:
    """A new, empty store of the same kind as `backend`, sharing its key folder."""
    if backend.kind == "sqlite":
        store: SqlStore = await SQLiteStore.open(tmp_path / "restored" / "kijkmee.sqlite3", keys)
        try:
            await store.ensure_controller(DEFAULT_CONTROLLER, "Default", T0)
            yield store
        finally:
            await store.close()
    else:
        async with fresh_postgres_database() as dsn:
            store = await PostgresStore.open(dsn, keys, max_size=3)
            try:
                await store.ensure_controller(DEFAULT_CONTROLLER, "Default", T0)
                yield store
            finally:
                await store.close()


def query(name: str) -> SubjectQuery:
    return SubjectQuery("name", name, T0 - dt.timedelta(days=1), T0 + dt.timedelta(days=1))


async def seed(store: SqlStore) -> None:
    await store.ensure_controller("acme", "Acme B.V.", T0)
    await store.create_room(ROOM, T0, T0 + dt.timedelta(hours=24))
    await store.create_room(OTHER_ROOM, T0, T0 + dt.timedelta(hours=24), controller_id="acme")
    for name in ("Anna", "Bob", "Cees"):
        await store.open_session(ROOM, "192.0.2.7", name, T0, phone="06-12345678")
    await store.open_session(OTHER_ROOM, "2001:db8::5", "Dirk", T0)
    await store.append_audit("setup", "session.write", "seed", T0)


async def test_a_restore_brings_everything_back_and_the_audit_chain_holds(
    store: SqlStore, backend: Backend, tmp_path: Path
) -> None:
    await seed(store)
    service = DataHandling(store, clock=lambda: T0 + dt.timedelta(hours=1))
    summary = await service.backup(tmp_path / "one.backup", "ops")
    assert summary.counts["sessions"] == 4 and summary.counts["controllers"] == 2
    assert (tmp_path / "one.backup").stat().st_mode & 0o777 == 0o600
    before = [(s.id, s.name, s.ip, s.phone, s.controller_id) for s in await store.list_sessions()]
    async with empty_target(backend, tmp_path, store.keys) as target:
        restored = await DataHandling(target, clock=lambda: T0 + dt.timedelta(hours=2)).restore(
            tmp_path / "one.backup", "ops", retention_days=90
        )
        assert restored.counts == summary.counts and restored.replayed == 0 and restored.controllers_purged == []
        assert [(s.id, s.name, s.ip, s.phone, s.controller_id) for s in await target.list_sessions()] == before
        assert audit.verify(await target.audit_entries()).ok
        # New sessions in the restored store get new ids, after the restored ones.
        new = await target.open_session(ROOM, "192.0.2.9", None, T0 + dt.timedelta(hours=2))
        assert new > max(s[0] for s in before)


async def test_the_backup_file_holds_no_plaintext_and_needs_the_backup_key(store: SqlStore, tmp_path: Path) -> None:
    await seed(store)
    path = tmp_path / "one.backup"
    await DataHandling(store, clock=lambda: T0).backup(path, "ops")
    raw = path.read_bytes()
    assert raw.startswith(MAGIC)
    for plain in (b"Anna", b"Dirk", b"192.0.2.7", b"2001:db8::5", b"12345678", b"Acme", ROOM.encode()):
        assert plain not in raw
    header, documents = read_backup(path, store.keys)
    assert header["counts"]["sessions"] == 4 and any(d["table"] == "sessions" for d in documents)
    with pytest.raises(BackupError, match="backup key"):
        read_backup(path, KeyStore(tmp_path / "other-keys"))
    damaged = bytearray(raw)
    damaged[-5] ^= 0x01
    (tmp_path / "damaged.backup").write_bytes(bytes(damaged))
    with pytest.raises(BackupError, match="fails authentication"):
        read_backup(tmp_path / "damaged.backup", store.keys)
    (tmp_path / "cut.backup").write_bytes(raw[: len(raw) - 40])
    with pytest.raises(BackupError, match=r"cut off|fails authentication"):
        read_backup(tmp_path / "cut.backup", store.keys)
    for key_file in store.keys.folder.glob("*.key"):  # no key, in any form, travels with the backup
        key = key_file.read_bytes().strip()
        assert key not in raw and base64.b64decode(key) not in raw


async def test_erasures_rectifications_and_restrictions_made_after_the_backup_survive_a_restore(
    store: SqlStore, backend: Backend, tmp_path: Path
) -> None:
    await seed(store)
    service = DataHandling(store, clock=lambda: T0 + dt.timedelta(hours=1))
    await service.backup(tmp_path / "old.backup", "ops")
    await service.handle_request(DEFAULT_CONTROLLER, "erase", query("anna"), "officer")
    await service.handle_request(DEFAULT_CONTROLLER, "rectify", query("Bob"), "officer", changes={"name": "Robert"})
    await service.handle_request(DEFAULT_CONTROLLER, "restrict", query("Cees"), "officer")
    ledger = DeletionLedger(store.keys).entries()
    assert [e["kind"] for e in ledger] == ["erase", "rectify", "restrict"]
    assert "Robert" not in (store.keys.folder / "deletion-ledger.jsonl").read_text()  # kept as ciphertext
    async with empty_target(backend, tmp_path, store.keys) as target:
        restored = await DataHandling(target, clock=lambda: T0 + dt.timedelta(hours=2)).restore(
            tmp_path / "old.backup", "ops", retention_days=90
        )
        assert restored.replayed == 3
        rows = {s.name: s for s in await target.list_sessions() if s.controller_id == DEFAULT_CONTROLLER}
        assert set(rows) == {"Robert", "Cees"}  # Anna stays erased, Bob stays rectified
        assert rows["Cees"].restricted_at is not None


async def test_a_restore_after_offboarding_deletes_the_controllers_unreadable_rows(
    store: SqlStore, backend: Backend, tmp_path: Path
) -> None:
    await seed(store)
    service = DataHandling(store, clock=lambda: T0 + dt.timedelta(hours=1))
    await service.backup(tmp_path / "old.backup", "ops")
    await store.start_offboarding("acme", T0 + dt.timedelta(days=1), "admin", T0 + dt.timedelta(hours=1))
    assert await store.purge_controllers(T0 + dt.timedelta(days=2)) == ["acme"]
    assert not store.keys.exists("acme")
    async with empty_target(backend, tmp_path, store.keys) as target:
        restored = await DataHandling(target, clock=lambda: T0 + dt.timedelta(days=2)).restore(
            tmp_path / "old.backup", "ops", retention_days=90
        )
        assert restored.controllers_purged == ["acme"]
        assert {s.controller_id for s in await target.list_sessions()} == {DEFAULT_CONTROLLER}
        acme = await target.get_controller("acme")
        assert acme is not None and acme.status == "deleted"


async def test_a_restore_anonymises_what_went_past_retention_meanwhile(
    store: SqlStore, backend: Backend, tmp_path: Path
) -> None:
    await seed(store)
    await DataHandling(store, clock=lambda: T0).backup(tmp_path / "old.backup", "ops")
    later = T0 + dt.timedelta(days=91)
    async with empty_target(backend, tmp_path, store.keys) as target:
        restored = await DataHandling(target, clock=lambda: later).restore(
            tmp_path / "old.backup", "ops", retention_days=90
        )
        assert restored.anonymised == 4
        assert await target.list_sessions() == [] and len(await target.list_visits()) == 4


async def test_restore_refuses_a_store_that_holds_data(store: SqlStore, tmp_path: Path) -> None:
    await seed(store)
    await DataHandling(store, clock=lambda: T0).backup(tmp_path / "one.backup", "ops")
    with pytest.raises(BackupError, match="new, empty store"):
        await DataHandling(store, clock=lambda: T0).restore(tmp_path / "one.backup", "ops", retention_days=90)
    assert len(await store.list_sessions()) == 4
