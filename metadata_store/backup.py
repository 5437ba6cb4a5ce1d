"""Backups: a consistent, encrypted snapshot of the store, and a restore that keeps erased people erased.

A backup is a logical copy of every table (the same file restores into SQLite or PostgreSQL), taken in
one snapshot transaction, compressed and encrypted in chunks with AES-256-GCM under the backup key.
Personal values inside stay encrypted with their controller's key as well, so destroying a controller's
key at offboarding makes its rows in every old backup unreadable. Neither the backup key nor any
controller key is ever written into a backup: they live in the key folder.

The key folder also holds the deletion ledger: every erasure, rectification and restriction a
data-subject request made, by session id (rectified values as ciphertext under the controller's key).
After a restore the ledger is replayed, the data of controllers whose key is gone is deleted, and the
retention sweep runs, so a restore never brings back what was erased, rectified or past its time.

File layout: MAGIC, a 4-byte big-endian header length, the header (JSON, plaintext: format, time,
schema version, row counts), then chunks of (4-byte length, 12-byte nonce, ciphertext+tag). Each chunk's
associated data binds it to the header, its position and whether it is the last, so a reordered, cut
or spliced file fails to decrypt.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import secrets
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from metadata_store import audit
from metadata_store.crypto import BACKUP_KEY_ID, CryptoError, KeyStore, MissingKey
from metadata_store.schema import TABLES
from metadata_store.sql import SqlStore, Tx, retention_cutoff
from metadata_store.store import StoreError

MAGIC = b"KIJKMEE-BACKUP\x00\x01\n"
FORMAT = "kijkmee-backup-1"
CHUNK = 1 << 20
ROWS_PER_LINE = 500
RESTORE_ORDER = ("controllers", "api_keys", "rooms", "sessions", "visits", "subject_requests", "audit_log", "operators",
                 "breaches")
LEDGER_FILE = "deletion-ledger.jsonl"


class BackupError(StoreError):
    """A backup that cannot be written, read or restored; the words say why."""


# --- the deletion ledger -----------------------------------------------------------------------------


class DeletionLedger:
    """Append-only JSON lines in the key folder: what data-subject requests removed or changed."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys
        self.path = keys.folder / LEDGER_FILE

    def append(self, entry: Mapping[str, Any]) -> None:
        self.keys.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, (json.dumps(dict(entry), sort_keys=True) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def entries(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def record(self, kind: str, controller_id: str, session_ids: Sequence[int], now: dt.datetime,
               changes: Mapping[str, str | None] | None = None) -> None:
        """`changes` (rectify) are kept encrypted with the controller's key, never in plaintext."""
        entry: dict[str, Any] = {
            "at": now.astimezone(dt.UTC).isoformat(), "kind": kind, "controller_id": controller_id,
            "session_ids": sorted(set(session_ids)),
        }
        if changes is not None:
            key = self.keys.get(controller_id)
            entry["changes"] = {
                field: None if value is None else base64.b64encode(key.encrypt("ledger", field, value)).decode()
                for field, value in changes.items()
            }
        self.append(entry)


# --- encoding rows -------------------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"b64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dt.datetime):
        return {"ts": value.astimezone(dt.UTC).isoformat(timespec="microseconds")}
    return value


def _decode(value: Any, sql_type: str) -> Any:
    if isinstance(value, dict) and "b64" in value:
        return base64.b64decode(value["b64"])
    if isinstance(value, dict) and "ts" in value:
        return dt.datetime.fromisoformat(value["ts"])
    if sql_type == "TIMESTAMP" and isinstance(value, str):  # SQLite hands timestamps out as text
        return dt.datetime.fromisoformat(value)
    return value


def _backup_key(keys: KeyStore) -> bytes:
    return (keys.get(BACKUP_KEY_ID) if keys.exists(BACKUP_KEY_ID) else keys.create(BACKUP_KEY_ID)).key


def _aad(header_digest: bytes, index: int, last: bool) -> bytes:
    return MAGIC + header_digest + struct.pack(">Q?", index, last)


@dataclass(frozen=True)
class BackupSummary:
    path: Path
    counts: dict[str, int]
    created_at: dt.datetime


async def _dump(tx: Tx) -> Iterator[bytes]:
    lines: list[bytes] = []
    for table, columns in TABLES.items():
        names = [c.name for c in columns]
        order = "seq" if table == "audit_log" else names[0]
        rows = await tx.fetch(f"SELECT {', '.join(names)} FROM {table} ORDER BY {order}")  # noqa: S608
        for start in range(0, max(len(rows), 1), ROWS_PER_LINE):
            part = rows[start:start + ROWS_PER_LINE]
            doc = {"table": table, "columns": names, "rows": [[_encode(v) for v in r] for r in part]}
            lines.append(json.dumps(doc, separators=(",", ":")).encode() + b"\n")
    return iter(lines)


async def write_backup(store: SqlStore, out: Path, now: dt.datetime, actor: str) -> BackupSummary:
    """Write an encrypted snapshot of every table to `out` (0600, written whole or not at all)."""
    key = AESGCM(_backup_key(store.keys))
    async with store.db.transaction(snapshot=True) as tx:
        counts = {t: int((await tx.fetch(f"SELECT COUNT(*) FROM {t}"))[0][0]) for t in TABLES}  # noqa: S608
        version = await store.db.schema_version(tx)
        payload = b"".join(await _dump(tx))
    header = json.dumps({"format": FORMAT, "created_at": now.astimezone(dt.UTC).isoformat(),
                         "schema_version": version, "counts": counts}, sort_keys=True).encode()
    digest = hashlib.sha256(header).digest()
    compressed = zlib.compress(payload, 6)
    chunks = [compressed[i:i + CHUNK] for i in range(0, len(compressed), CHUNK)] or [b""]
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(MAGIC + struct.pack(">I", len(header)) + header)
            for index, chunk in enumerate(chunks):
                nonce = secrets.token_bytes(12)
                sealed = key.encrypt(nonce, chunk, _aad(digest, index, index == len(chunks) - 1))
                handle.write(struct.pack(">I", len(sealed)) + nonce + sealed)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, out)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    await store.append_audit(actor, audit.Action.BACKUP_RUN, "backup", now)
    return BackupSummary(out, counts, now)


def read_backup(path: Path, keys: KeyStore) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and the table documents; raises BackupError for a damaged file or a wrong key."""
    data = path.read_bytes()
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise BackupError(f"{path.name} is not a kijkmee backup")
    offset = len(MAGIC)
    (length,) = struct.unpack(">I", data[offset:offset + 4])
    header_bytes = data[offset + 4:offset + 4 + length]
    offset += 4 + length
    try:
        header = json.loads(header_bytes)
    except ValueError:
        raise BackupError(f"{path.name}: the header is damaged") from None
    if header.get("format") != FORMAT:
        raise BackupError(f"{path.name}: unknown backup format {header.get('format')!r}")
    try:
        key = AESGCM(keys.get(BACKUP_KEY_ID).key)
    except MissingKey:
        raise BackupError("the backup key is not in the key folder; without it no backup can be read") from None
    digest = hashlib.sha256(header_bytes).digest()
    sealed_chunks: list[tuple[bytes, bytes]] = []
    while offset < len(data):
        if offset + 16 > len(data):
            raise BackupError(f"{path.name} is cut off")
        (size,) = struct.unpack(">I", data[offset:offset + 4])
        nonce, sealed = data[offset + 4:offset + 16], data[offset + 16:offset + 16 + size]
        if len(sealed) != size:
            raise BackupError(f"{path.name} is cut off")
        sealed_chunks.append((nonce, sealed))
        offset += 16 + size
    parts = []
    for index, (nonce, sealed) in enumerate(sealed_chunks):
        try:
            parts.append(key.decrypt(nonce, sealed, _aad(digest, index, index == len(sealed_chunks) - 1)))
        except Exception:
            raise BackupError(f"{path.name}: chunk {index} fails authentication (damaged, cut or wrong key)") from None
    try:
        payload = zlib.decompress(b"".join(parts))
    except zlib.error:
        raise BackupError(f"{path.name}: the content is damaged") from None
    documents = [json.loads(line) for line in payload.splitlines() if line]
    return header, documents


@dataclass(frozen=True)
class RestoreSummary:
    counts: dict[str, int]
    replayed: int
    """Ledger entries applied (erasures, rectifications, restrictions made after the backup)."""
    controllers_purged: list[str]
    """Controllers whose key was destroyed since: their rows were deleted."""
    anonymised: int


async def restore_backup(
    store: SqlStore, path: Path, now: dt.datetime, actor: str, retention_days: int
) -> RestoreSummary:
    """Load `path` into a freshly created, empty store, then replay the deletion ledger, purge
    controllers without a key, and anonymise what is past retention."""
    header, documents = read_backup(path, store.keys)
    async with store.db.transaction() as tx:
        if header["schema_version"] != await store.db.schema_version(tx):
            raise BackupError(f"the backup has schema version {header['schema_version']}; this store another:"
                              " restore it with the kijkmee version that made it, then upgrade")
        for table in ("sessions", "rooms", "audit_log", "operators", "breaches", "subject_requests", "visits",
                      "api_keys"):
            if (await tx.fetch(f"SELECT COUNT(*) FROM {table}"))[0][0]:  # noqa: S608
                raise BackupError("restore only into a new, empty store (a fresh data folder or database)")
        await tx.execute("DELETE FROM controllers")  # only the default one open_store made, with nothing in it
        types = {t: {c.name: c.sql_type for c in cols} for t, cols in TABLES.items()}
        counts = dict.fromkeys(TABLES, 0)
        for table in RESTORE_ORDER:
            for doc in (d for d in documents if d["table"] == table):
                columns = doc["columns"]
                if set(columns) - set(types[table]):
                    raise BackupError(f"the backup's {table} has columns this store does not know")
                # Table and column names were just checked against the schema declaration.
                marks = ", ".join("?" for _ in columns)
                sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608
                for row in doc["rows"]:
                    await tx.execute(sql, *(_decode(v, types[table][c]) for c, v in zip(columns, row, strict=True)))
                    counts[table] += 1
        await store.db.after_restore(tx)
    if counts != header["counts"]:
        raise BackupError("the restored row counts differ from the backup's header")
    replayed = await replay_ledger(store, now)
    purged = []
    for controller in await store.list_controllers():
        if controller.status != "deleted" and not store.keys.exists(controller.id):
            await store.delete_controller(controller.id, "job:restore", now)
            purged.append(controller.id)
    swept = await store.anonymise(retention_cutoff(now, retention_days), now, "job:restore")
    await store.append_audit(actor, audit.Action.BACKUP_RESTORE, "backup", now)
    return RestoreSummary(counts, replayed, purged, swept.anonymised)


async def replay_ledger(store: SqlStore, now: dt.datetime) -> int:
    """Apply every ledger entry whose sessions are still there; returns how many did something."""
    applied = 0
    for entry in DeletionLedger(store.keys).entries():
        controller_id = entry["controller_id"]
        if not store.keys.exists(controller_id):
            continue  # the controller's data is unreadable and will be purged
        async with store.db.transaction() as tx:
            ids = [int(i) for i in entry["session_ids"]]
            if not ids:
                continue
            marks = ", ".join("?" for _ in ids)
            present = [int(r[0]) for r in await tx.fetch(
                f"SELECT id FROM sessions WHERE controller_id = ? AND id IN ({marks})",  # noqa: S608
                controller_id, *ids,
            )]
        if not present:
            continue
        object_id = "ledger-replay"
        if entry["kind"] == "erase":
            await store.erase_sessions(controller_id, present, "job:restore", now, object_id)
        elif entry["kind"] == "restrict":
            await store.restrict_sessions(controller_id, present, "job:restore", now, object_id)
        elif entry["kind"] == "rectify":
            key = store.keys.get(controller_id)
            try:
                changes = {
                    field: None if blob is None else key.decrypt("ledger", field, base64.b64decode(blob))
                    for field, blob in entry["changes"].items()
                }
            except CryptoError:
                raise BackupError("a rectification in the deletion ledger fails authentication") from None
            await store.rectify_sessions(controller_id, present, changes, "job:restore", now, object_id)
        else:
            continue
        applied += 1
    return applied
