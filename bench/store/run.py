"""The metadata store at 1,000,000 sessions, on SQLite and on PostgreSQL (issue 4, "Performance").

For each backend, on a fresh database:

1. seed N sessions (default 1,000,000) across 3 controllers, in rooms of 1-3, joined_at spread evenly
   over the last 120 days (a sixth is older than 100 days, a quarter older than 90); every session has
   an IP, half a typed name, a tenth a phone number, a tenth an e-mail address. Values are sealed with the
   controller's key exactly as `SqlStore.open_session` seals them (`SqlStore._sealed`), then loaded in
   bulk through the driver (sqlite3 executemany / asyncpg COPY). Setup, timed but not a goal.
2. lookups: `find_subject` by name and by IP (default 500 each, a tenth of them values nobody has),
   100-day window, one at a time; p50/p90/p99/max. For context the same query as plain SQL on the
   blind-index column (index computed, no transaction around it, no audit entry, no decryption).
3. controller export: `export_controller` of one controller (a third of the rows).
4. retention sweep: `anonymise(retention_cutoff(now, 90), now)`, compaction included (split out by
   timing the backend's `compact`); database size before and after; then the next day's sweep (a
   120th of the rows), which is what the daily job does in steady state. After each sweep: whether
   sampled ciphertexts and blind indexes of the removed sessions are still in the database files.

Goals (absolute, there is no peer to compare with): sweep <= 30 s, lookup p99 <= 50 ms.
Writes bench/results/store.json and store.md. `make bench-store` (BENCH_STORE_ARGS="--sessions 100000").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import json
import os
import platform
import random
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.store.data import CONTROLLERS, LOOKUP_WINDOW_DAYS, Candidates, Population, Probe  # noqa: E402
from metadata_store.crypto import DataKey, KeyStore  # noqa: E402
from metadata_store.postgres import PostgresStore  # noqa: E402
from metadata_store.sql import SqlStore, retention_cutoff  # noqa: E402
from metadata_store.sqlite import SQLiteStore  # noqa: E402
from metadata_store.sqlite import _param as sqlite_param  # noqa: E402

RESULTS = ROOT / "bench" / "results"
POSTGRES_SERVER = "127.0.0.1:5432"
ADMIN_DSN = f"postgresql://postgres@{POSTGRES_SERVER}/postgres"
GOAL_SWEEP_S = 30.0
GOAL_LOOKUP_P99_MS = 50.0
RETENTION_DAYS = 90
ACTOR = "bench-officer"
BATCH = 50_000

SESSION_INSERT_COLUMNS = (
    "controller_id", "room_id", "ip", "ip_index", "name", "name_index", "phone", "phone_index", "email",
    "email_index", "joined_at", "left_at", "participants", "route", "setup_ms",
)
SELECT_COLUMNS = (
    "id, controller_id, room_id, ip, name, phone, email, joined_at, left_at, participants, route, setup_ms,"
    " restricted_at"
)


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "count": len(ms), "p50_ms": round(percentile(ms, 0.5), 2), "p90_ms": round(percentile(ms, 0.9), 2),
        "p99_ms": round(percentile(ms, 0.99), 2), "max_ms": round(max(ms), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_ticks() -> list[int]:
    """Whole machine, /proc/stat: user, nice, system, idle, iowait, irq, softirq, steal (clock ticks)."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def own_io() -> dict[str, int]:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return {"read_bytes": int(fields["read_bytes"]), "write_bytes": int(fields["write_bytes"])}


class Phase:
    """Wall time, this process's CPU time and storage I/O, and what the whole machine did meanwhile
    (the share of CPU time busy, idle, waiting for I/O), around one step."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0
        self.load_before: list[float] = []
        self.load_after: list[float] = []
        self.machine: dict[str, float] = {}
        self.io: dict[str, int] = {}

    def __enter__(self) -> Phase:
        self.load_before = load()
        self._ticks0 = cpu_ticks()
        self._io0 = own_io()
        self._cpu0 = time.process_time()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._t0
        self.cpu = time.process_time() - self._cpu0
        ticks = [b - a for a, b in zip(self._ticks0, cpu_ticks(), strict=True)]
        total = max(1, sum(ticks))
        self.machine = {"busy": round((ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]) / total, 3),
                        "idle": round(ticks[3] / total, 3), "iowait": round(ticks[4] / total, 3),
                        "steal": round(ticks[7] / total, 3)}
        io = own_io()
        self.io = {k: io[k] - self._io0[k] for k in io}
        self.load_after = load()

    def record(self) -> dict[str, Any]:
        return {"wall_s": round(self.wall, 3), "bench_process_cpu_s": round(self.cpu, 3),
                "bench_process_io_bytes": self.io, "machine_cpu_share": self.machine,
                "loadavg_1_5_15_before": self.load_before, "loadavg_1_5_15_after": self.load_after}


def seal_row(store: SqlStore, keys: dict[str, DataKey], session: Any) -> list[Any]:
    """One session's row values, personal columns sealed exactly as `open_session` seals them."""
    sealed = store._sealed(keys[session.controller_id], {
        "ip": session.ip, "name": session.name, "phone": session.phone, "email": session.email,
    })
    return [session.controller_id, session.room_id, *sealed, session.joined_at, session.left_at,
            session.participants, session.route, session.setup_ms]


# -- backends --------------------------------------------------------------------------------------


class Backend:
    kind = ""

    def __init__(self, workdir: Path, keys: KeyStore) -> None:
        self.workdir = workdir
        self.keys = keys

    async def create(self, now: dt.datetime) -> SqlStore:
        raise NotImplementedError
    async def open(self) -> SqlStore:
        raise NotImplementedError
    async def load_batch(self, rooms: list[tuple[Any, ...]], sessions: list[list[Any]]) -> None:
        raise NotImplementedError
    async def after_load(self) -> dict[str, float]:
        raise NotImplementedError
    async def plain_find(self, kind: str, index: str, controller_id: str, since: dt.datetime,
                         until: dt.datetime) -> list[Any]:
        raise NotImplementedError
    async def plain_export(self, controller_id: str) -> int:
        raise NotImplementedError
    async def sizes(self) -> dict[str, Any]:
        raise NotImplementedError
    async def sample_blobs(self, removed: bool, cutoff: dt.datetime, limit: int) -> list[bytes]:
        """Stored bytes of random sessions the sweep at `cutoff` removes (`removed`) or keeps: ciphertexts
        (unique: random nonces) and those blind indexes no kept session shares (an index is the same for
        every session of the controller with that value)."""
        raise NotImplementedError
    async def lingering(self, blobs: list[bytes]) -> dict[str, Any]:
        raise NotImplementedError
    async def explain(self, sql: str, *args: Any) -> list[str]:
        raise NotImplementedError
    async def version(self) -> dict[str, Any]:
        raise NotImplementedError
    async def drop(self) -> None:
        raise NotImplementedError


class SqliteBackend(Backend):
    kind = "sqlite"

    def __init__(self, workdir: Path, keys: KeyStore) -> None:
        super().__init__(workdir, keys)
        self.path = workdir / "data" / "kijkmee.sqlite3"
        self.raw: sqlite3.Connection | None = None

    async def create(self, now: dt.datetime) -> SqlStore:
        return await SQLiteStore.open(self.path, self.keys, now=now)

    async def open(self) -> SqlStore:
        return await SQLiteStore.open(self.path, self.keys)

    def _raw(self) -> sqlite3.Connection:
        if self.raw is None:
            self.raw = sqlite3.connect(self.path, isolation_level=None, timeout=60)
        return self.raw

    async def load_batch(self, rooms: list[tuple[Any, ...]], sessions: list[list[Any]]) -> None:
        db = self._raw()
        db.execute("PRAGMA cache_size = -1048576")  # 1 GiB for the load only (setup, this connection)
        db.execute("BEGIN")
        db.executemany("INSERT INTO rooms (id, controller_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
                       [tuple(sqlite_param(v) for v in room) for room in rooms])
        db.executemany(
            f"INSERT INTO sessions ({', '.join(SESSION_INSERT_COLUMNS)}) VALUES ({', '.join('?' * 15)})",
            [tuple(sqlite_param(v) for v in row) for row in sessions],
        )
        db.execute("COMMIT")

    async def after_load(self) -> dict[str, float]:
        t0 = time.perf_counter()
        self._raw().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.raw_close()
        return {"wal_checkpoint_s": round(time.perf_counter() - t0, 3)}

    def raw_close(self) -> None:
        if self.raw is not None:
            self.raw.close()
            self.raw = None

    async def plain_find(self, kind: str, index: str, controller_id: str, since: dt.datetime,
                         until: dt.datetime) -> list[Any]:
        return self._raw().execute(
            f"SELECT {SELECT_COLUMNS} FROM sessions WHERE {kind}_index = ? AND controller_id = ?"
            " AND joined_at >= ? AND joined_at < ? ORDER BY id",
            (index, controller_id, sqlite_param(since), sqlite_param(until)),
        ).fetchall()

    async def plain_export(self, controller_id: str) -> int:
        rows = self._raw().execute(
            f"SELECT {SELECT_COLUMNS} FROM sessions WHERE controller_id = ? ORDER BY id", (controller_id,)
        ).fetchall()
        return len(rows)

    async def sizes(self) -> dict[str, Any]:
        wal = self.path.with_name(self.path.name + "-wal")
        db = self._raw()
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        return {
            "file_bytes": self.path.stat().st_size,
            "wal_bytes": wal.stat().st_size if wal.exists() else 0,
            "page_size": page_size,
            "page_count": db.execute("PRAGMA page_count").fetchone()[0],
            "freelist_pages": db.execute("PRAGMA freelist_count").fetchone()[0],
            "auto_vacuum": db.execute("PRAGMA auto_vacuum").fetchone()[0],
        }

    async def sample_blobs(self, removed: bool, cutoff: dt.datetime, limit: int) -> list[bytes]:
        rows = self._raw().execute(_sample_sql(removed), (sqlite_param(cutoff),) * 3 + (limit,)).fetchall()
        return _blobs(rows)

    async def lingering(self, blobs: list[bytes]) -> dict[str, Any]:
        wal = self.path.with_name(self.path.name + "-wal")
        files = [self.path] + ([wal] if wal.exists() else [])
        return _scan(files, blobs)

    async def explain(self, sql: str, *args: Any) -> list[str]:
        rows = self._raw().execute("EXPLAIN QUERY PLAN " + sql, tuple(sqlite_param(a) for a in args)).fetchall()
        return [str(r[-1]) for r in rows]

    async def version(self) -> dict[str, Any]:
        return {"sqlite": sqlite3.sqlite_version, "python_sqlite3_module": sqlite3.version
                if hasattr(sqlite3, "version") else None}

    async def drop(self) -> None:
        self.raw_close()


class PostgresBackend(Backend):
    kind = "postgres"

    def __init__(self, workdir: Path, keys: KeyStore) -> None:
        super().__init__(workdir, keys)
        self.name = f"kijkmee_bench_{uuid.uuid4().hex[:12]}"
        self.dsn = f"postgresql://postgres@{POSTGRES_SERVER}/{self.name}"
        self.raw: Any = None

    async def create(self, now: dt.datetime) -> SqlStore:
        admin = await asyncpg.connect(ADMIN_DSN, timeout=5)
        try:
            await admin.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await admin.close()
        return await PostgresStore.open(self.dsn, self.keys, now=now)

    async def open(self) -> SqlStore:
        return await PostgresStore.open(self.dsn, self.keys)

    async def _raw(self) -> Any:
        if self.raw is None:
            self.raw = await asyncpg.connect(self.dsn)
        return self.raw

    async def load_batch(self, rooms: list[tuple[Any, ...]], sessions: list[list[Any]]) -> None:
        db = await self._raw()
        async with db.transaction():
            await db.copy_records_to_table(
                "rooms", records=rooms, columns=["id", "controller_id", "created_at", "expires_at"]
            )
            await db.copy_records_to_table("sessions", records=sessions, columns=list(SESSION_INSERT_COLUMNS))

    async def after_load(self) -> dict[str, float]:
        # What autovacuum would have done by the time a database has grown to this size.
        db = await self._raw()
        t0 = time.perf_counter()
        await db.execute("VACUUM ANALYZE")
        return {"vacuum_analyze_s": round(time.perf_counter() - t0, 3)}

    async def plain_find(self, kind: str, index: str, controller_id: str, since: dt.datetime,
                         until: dt.datetime) -> list[Any]:
        db = await self._raw()
        return list(await db.fetch(
            f"SELECT {SELECT_COLUMNS} FROM sessions WHERE {kind}_index = $1 AND controller_id = $2"
            " AND joined_at >= $3 AND joined_at < $4 ORDER BY id",
            index, controller_id, since, until,
        ))

    async def plain_export(self, controller_id: str) -> int:
        db = await self._raw()
        rows = await db.fetch(f"SELECT {SELECT_COLUMNS} FROM sessions WHERE controller_id = $1 ORDER BY id",
                              controller_id)
        return len(rows)

    async def sizes(self) -> dict[str, Any]:
        db = await self._raw()
        row = await db.fetchrow(
            "SELECT pg_database_size(current_database()) AS database_bytes,"
            " pg_total_relation_size('sessions') AS sessions_total_bytes,"
            " pg_relation_size('sessions') AS sessions_heap_bytes,"
            " pg_indexes_size('sessions') AS sessions_indexes_bytes,"
            " pg_total_relation_size('visits') AS visits_total_bytes,"
            " pg_total_relation_size('rooms') AS rooms_total_bytes"
        )
        return dict(row)

    async def sample_blobs(self, removed: bool, cutoff: dt.datetime, limit: int) -> list[bytes]:
        db = await self._raw()
        counter = iter(range(1, 10))
        sql = "".join(f"${next(counter)}" if ch == "?" else ch for ch in _sample_sql(removed))
        rows = await db.fetch(sql, cutoff, cutoff, cutoff, limit)
        return _blobs([tuple(r) for r in rows])

    async def lingering(self, blobs: list[bytes]) -> dict[str, Any]:
        """The sessions table's heap and index files after a CHECKPOINT (informational: needs read access
        to the server's data directory, as on this machine; WAL segments are not scanned)."""
        db = await self._raw()
        await db.execute("CHECKPOINT")
        data_dir = Path(await db.fetchval("SHOW data_directory"))
        relations = await db.fetch(
            "SELECT pg_relation_filepath(c.oid) FROM pg_class c WHERE c.oid = 'sessions'::regclass"
            " OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'sessions'::regclass)"
        )
        files: list[Path] = []
        for (relative,) in relations:
            base = data_dir / relative
            files += [p for p in [base, *sorted(base.parent.glob(base.name + ".[0-9]*"))] if p.exists()]
        try:
            return _scan(files, blobs)
        except PermissionError as error:
            return {"skipped": f"cannot read the server's files: {error}"}

    async def rewrite(self, removed: list[bytes]) -> dict[str, Any]:
        """Not what the store does: what rewriting the table (VACUUM FULL, an ACCESS EXCLUSIVE lock for
        its duration) would cost, and whether removed values are then gone from the table's files."""
        db = await self._raw()
        with Phase() as phase:
            await db.execute("VACUUM FULL sessions")
        return {"statement": "VACUUM FULL sessions", **phase.record(), "size_after": await self.sizes(),
                "removed_values_still_in_files": {"sampled_values": len(removed), **(await self.lingering(removed))}}

    async def explain(self, sql: str, *args: Any) -> list[str]:
        db = await self._raw()
        counter = iter(range(1, 100))
        numbered = "".join(f"${next(counter)}" if ch == "?" else ch for ch in sql)
        rows = await db.fetch("EXPLAIN (ANALYZE, BUFFERS) " + numbered, *args)
        return [r[0] for r in rows]

    async def version(self) -> dict[str, Any]:
        db = await self._raw()
        settings = {}
        for name in ("shared_buffers", "work_mem", "maintenance_work_mem", "max_wal_size", "synchronous_commit",
                     "fsync", "autovacuum"):
            settings[name] = await db.fetchval(f"SHOW {name}")
        return {"postgresql": await db.fetchval("SHOW server_version"), "asyncpg": asyncpg.__version__,
                "settings": settings}

    async def drop(self) -> None:
        if self.raw is not None:
            await self.raw.close()
            self.raw = None
        admin = await asyncpg.connect(ADMIN_DSN, timeout=5)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await admin.close()


def _sample_sql(removed: bool) -> str:
    shared = ("CASE WHEN NOT EXISTS (SELECT 1 FROM sessions k WHERE k.controller_id = s.controller_id"
              " AND k.{0}_index = s.{0}_index AND k.joined_at >= ?) THEN s.{0}_index END")
    return (f"SELECT s.ip, s.name, {shared.format('ip')}, {shared.format('name')} FROM sessions s"
            f" WHERE s.joined_at {'<' if removed else '>='} ? ORDER BY random() LIMIT ?")


def _blobs(rows: Sequence[Sequence[Any]]) -> list[bytes]:
    out: list[bytes] = []
    for row in rows:
        for value in row:
            if value is None:
                continue
            out.append(bytes(value) if not isinstance(value, str) else value.encode())
    return out


def _scan(files: Sequence[Path], blobs: Sequence[bytes]) -> dict[str, Any]:
    found = 0
    total = 0
    for path in files:
        data = path.read_bytes()
        total += len(data)
        found_here = {blob for blob in blobs if blob in data}
        found += len(found_here)
        blobs = [b for b in blobs if b not in found_here]
        del data
    return {"files": [p.name for p in files], "bytes_scanned": total, "values_found": found}


# -- the run ---------------------------------------------------------------------------------------


async def seed(backend: Backend, population: Population, now: dt.datetime) -> tuple[dict[str, Any], Candidates]:
    store = await backend.create(now)
    try:
        for controller in CONTROLLERS:
            await store.ensure_controller(controller, f"Bench {controller}", now - dt.timedelta(days=400))
        keys = {controller: backend.keys.get(controller) for controller in CONTROLLERS}
        candidates = Candidates()
        seal_s = insert_s = 0.0
        rooms_total = sessions_total = 0
        with Phase() as phase:
            generate_t0 = time.perf_counter()
            for rooms, sessions in population.batches(BATCH, candidates):
                t0 = time.perf_counter()
                rows = [seal_row(store, keys, s) for s in sessions]
                room_rows = [(r.id, r.controller_id, r.created_at, r.expires_at) for r in rooms]
                t1 = time.perf_counter()
                await backend.load_batch(room_rows, rows)
                t2 = time.perf_counter()
                seal_s += t1 - t0
                insert_s += t2 - t1
                rooms_total += len(rooms)
                sessions_total += len(sessions)
                if sessions_total % (BATCH * 4) == 0:
                    log(f"  {backend.kind}: seeded {sessions_total:,} sessions")
            generate_s = time.perf_counter() - generate_t0 - seal_s - insert_s
            after = await backend.after_load()
    finally:
        await store.close()
    return {
        "sessions": sessions_total, "rooms": rooms_total, **phase.record(),
        "generate_s": round(generate_s, 3), "seal_s": round(seal_s, 3), "insert_s": round(insert_s, 3),
        **after,
    }, candidates


async def time_lookups(store: SqlStore, backend: Backend, probes: Sequence[Probe], now: dt.datetime
                       ) -> dict[str, Any]:
    since = now - dt.timedelta(days=LOOKUP_WINDOW_DAYS)
    keys = {controller: backend.keys.get(controller) for controller in CONTROLLERS}
    warm = probes[:10]
    for number, probe in enumerate(warm):
        await store.find_subject(probe.controller_id, probe.kind, probe.value, since, now, ACTOR, now,
                                 f"req-warm{number:04d}")
        await backend.plain_find(probe.kind, keys[probe.controller_id].blind_index(probe.kind, probe.value),
                                 probe.controller_id, since, now)
    store_times: dict[str, list[float]] = {"name": [], "ip": []}
    plain_times: dict[str, list[float]] = {"name": [], "ip": []}
    matches: dict[str, list[int]] = {"name": [], "ip": []}
    mismatches: list[dict[str, Any]] = []
    for number, probe in enumerate(probes):
        t0 = time.perf_counter()
        found = await store.find_subject(probe.controller_id, probe.kind, probe.value, since, now, ACTOR, now,
                                         f"req-{number:08x}")
        t1 = time.perf_counter()
        index = keys[probe.controller_id].blind_index(probe.kind, probe.value)
        rows = await backend.plain_find(probe.kind, index, probe.controller_id, since, now)
        t2 = time.perf_counter()
        store_times[probe.kind].append(t1 - t0)
        plain_times[probe.kind].append(t2 - t1)
        matches[probe.kind].append(len(found))
        if len(rows) != len(found) or (probe.present and not found) or (not probe.present and found):
            # Synthetic values only: safe to record.
            mismatches.append({"kind": probe.kind, "typed": probe.value, "taken_from_data": probe.present,
                               "store_found": len(found), "plain_sql_found": len(rows)})
    out: dict[str, Any] = {"window_days": LOOKUP_WINDOW_DAYS, "inconsistent_results": len(mismatches),
                           "inconsistent_probes": mismatches}
    for kind in ("name", "ip"):
        present = [m for m, p in zip(matches[kind], [p for p in probes if p.kind == kind], strict=True) if p.present]
        out[kind] = {
            "store_find_subject": summary_ms(store_times[kind]),
            "plain_sql_blind_index": summary_ms(plain_times[kind]),
            "probes_present": len(present), "probes_absent": len(matches[kind]) - len(present),
            "sessions_found_per_present_probe": {
                "mean": round(statistics.fmean(present), 2) if present else 0,
                "max": max(present) if present else 0,
            },
        }
    return out


async def timed_compact(store: SqlStore) -> list[float]:
    """Wrap the backend's compact (VACUUM etc.) on this store instance so a sweep's share can be reported."""
    calls: list[float] = []
    db: Any = store.db
    original: Callable[[Sequence[str]], Awaitable[None]] = db.compact

    async def compact(tables: Sequence[str]) -> None:
        t0 = time.perf_counter()
        try:
            await original(tables)
        finally:
            calls.append(time.perf_counter() - t0)

    db.compact = compact
    return calls


async def sweep(store: SqlStore, backend: Backend, now: dt.datetime, compact_calls: list[float],
                check: bool, removed: list[bytes]) -> dict[str, Any]:
    """One `anonymise` as of `now`, timed; adds the sampled removed values to `removed`."""
    cutoff = retention_cutoff(now, RETENTION_DAYS)
    gone = await backend.sample_blobs(True, cutoff, 20) if check else []
    removed += gone
    kept = await backend.sample_blobs(False, cutoff, 3) if check else []
    before = await backend.sizes()
    compact_calls.clear()
    with Phase() as phase:
        result = await store.anonymise(cutoff, now)
    after = await backend.sizes()
    record: dict[str, Any] = {
        "now": now.isoformat(), "cutoff": cutoff.isoformat(), **phase.record(),
        "compact_s": round(sum(compact_calls), 3),
        "transaction_s": round(phase.wall - sum(compact_calls), 3),
        "anonymised": result.anonymised, "visits_written": result.visits, "rooms_removed": result.rooms_removed,
        "size_before": before, "size_after": after,
    }
    if check:
        record["removed_values_still_in_files"] = {
            "sampled_values": len(gone), **(await backend.lingering(gone)),
            "control_kept_values_found": (await backend.lingering(kept)).get("values_found"),
            "control_kept_values_sampled": len(kept),
        }
    return record


async def bench_backend(backend: Backend, population: Population, now: dt.datetime, per_kind: int,
                        check: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    log(f"{backend.kind}: seeding {population.sessions:,} sessions")
    out["seed"], candidates = await seed(backend, population, now)
    log(f"{backend.kind}: seeded in {out['seed']['wall_s']:.1f} s ({out['seed']}); sizes {await backend.sizes()}")
    out["size_after_seed"] = await backend.sizes()
    out["versions"] = await backend.version()
    probes = population.probes(candidates, per_kind)

    store = await backend.open()
    try:
        compact_calls = await timed_compact(store)
        log(f"{backend.kind}: {len(probes)} lookups")
        with Phase() as phase:
            out["lookup"] = await time_lookups(store, backend, probes, now)
        out["lookup"]["phase"] = phase.record()
        figures = {k: out["lookup"][k]["store_find_subject"] for k in ("name", "ip")}
        log(f"{backend.kind}: lookups {json.dumps(figures)}")
        sample = next(p for p in probes if p.present and p.kind == "name")
        since = now - dt.timedelta(days=LOOKUP_WINDOW_DAYS)
        out["lookup"]["query_plan_name"] = await backend.explain(
            f"SELECT {SELECT_COLUMNS} FROM sessions WHERE name_index = ? AND controller_id = ?"
            " AND joined_at >= ? AND joined_at < ? ORDER BY id",
            backend.keys.get(sample.controller_id).blind_index("name", sample.value), sample.controller_id, since, now,
        )

        log(f"{backend.kind}: export of {CONTROLLERS[0]}")
        gc.collect()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with Phase() as phase:
            exported = await store.export_controller(CONTROLLERS[0], ACTOR, now)
        out["export"] = {
            "controller": CONTROLLERS[0], **phase.record(), "sessions": len(exported["sessions"]),
            "rooms": len(exported["rooms"]), "bench_process_max_rss_kib_before": rss_before,
            "bench_process_max_rss_kib_after": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }
        del exported
        gc.collect()
        t0 = time.perf_counter()
        rows = await backend.plain_export(CONTROLLERS[0])
        out["export"]["plain_sql_select_s"] = round(time.perf_counter() - t0, 3)
        out["export"]["plain_sql_rows"] = rows
        log(f"{backend.kind}: export {out['export']['wall_s']:.1f} s, {out['export']['sessions']:,} sessions")

        out["sweep_plan"] = await backend.explain(
            "SELECT count(*) FROM sessions WHERE joined_at < ?", retention_cutoff(now, RETENTION_DAYS))
        log(f"{backend.kind}: retention sweep")
        removed: list[bytes] = []
        out["sweep"] = await sweep(store, backend, now, compact_calls, check, removed)
        log(f"{backend.kind}: sweep {out['sweep']['wall_s']:.1f} s (compact {out['sweep']['compact_s']:.1f} s),"
            f" {out['sweep']['anonymised']:,} anonymised")
        out["sweep_next_day"] = await sweep(store, backend, now + dt.timedelta(days=1), compact_calls, check,
                                            removed)
        log(f"{backend.kind}: next day's sweep {out['sweep_next_day']['wall_s']:.1f} s"
            f" (compact {out['sweep_next_day']['compact_s']:.1f} s), {out['sweep_next_day']['anonymised']:,}")
        if isinstance(backend, PostgresBackend) and check:
            out["context_vacuum_full"] = await backend.rewrite(removed)
            log(f"{backend.kind}: for context, VACUUM FULL sessions {out['context_vacuum_full']['wall_s']:.1f} s")
    finally:
        await store.close()
    lookup_p99 = max(out["lookup"][k]["store_find_subject"]["p99_ms"] for k in ("name", "ip"))
    out["goals"] = {
        "sweep_s": out["sweep"]["wall_s"], "sweep_met": out["sweep"]["wall_s"] <= GOAL_SWEEP_S,
        "lookup_p99_ms": lookup_p99, "lookup_met": lookup_p99 <= GOAL_LOOKUP_P99_MS,
    }
    return out


def machine_info() -> dict[str, Any]:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), "0")
    return {
        "cpu": cpu, "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(int(mem) / 1024 / 1024, 1), "kernel": platform.release(),
        "os": platform.platform(), "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
        "asyncpg": asyncpg.__version__, "loadavg_at_start": load(),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    population = Population(args.sessions, now, seed=args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="kijkmee-bench-store-", dir=args.workdir))
    results: dict[str, Any] = {
        "bench": "store", "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "sessions": args.sessions, "now": now.isoformat(),
        "goals": {"sweep_s": GOAL_SWEEP_S, "lookup_p99_ms": GOAL_LOOKUP_P99_MS,
                  "note": "absolute goals from issue 4; there is no peer to compare with"},
        "settings": {
            "controllers": len(CONTROLLERS), "spread_days": 120, "retention_days": RETENTION_DAYS,
            "lookup_window_days": LOOKUP_WINDOW_DAYS, "lookups_per_kind": args.lookups, "seed": args.seed,
            "name_pool": population.name_pool_size, "ip_pool": population.ip_pool_size,
        },
        "machine": machine_info(), "backends": {},
    }
    try:
        for kind in args.backends:
            keys = KeyStore(workdir / f"{kind}-keys")
            backend: Backend = SqliteBackend(workdir / kind, keys) if kind == "sqlite" \
                else PostgresBackend(workdir / kind, keys)
            try:
                results["backends"][kind] = await bench_backend(
                    backend, population, now, args.lookups, not args.no_lingering_check)
            finally:
                if not args.keep:
                    await backend.drop()
                else:
                    log(f"kept {kind}: {getattr(backend, 'path', None) or getattr(backend, 'dsn', None)}")
            if not args.keep and kind == "sqlite":
                shutil.rmtree(workdir / kind, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    results["machine"]["loadavg_at_end"] = load()
    return results


def write_markdown(results: dict[str, Any]) -> str:
    from bench.store.report import markdown
    return markdown(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1_000_000, help="sessions to seed (default 1,000,000)")
    parser.add_argument("--lookups", type=int, default=500, help="lookups per kind, name and IP (default 500)")
    parser.add_argument("--backends", default="sqlite,postgres", type=lambda s: [b for b in s.split(",") if b],
                        help="comma-separated: sqlite,postgres (default both)")
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the SQLite file (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the databases (and print where they are)")
    parser.add_argument("--no-lingering-check", action="store_true",
                        help="skip scanning the files for removed values after each sweep")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default bench/results)")
    parser.add_argument("--render", type=Path, help="only rewrite the .md from this .json")
    args = parser.parse_args(argv)
    if args.render:
        results = json.loads(args.render.read_text())
        args.render.with_suffix(".md").write_text(write_markdown(results))
        return 0
    unknown = set(args.backends) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    random.seed(args.seed)
    results = asyncio.run(main_async(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "store.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (args.out / "store.md").write_text(write_markdown(results))
    log(f"wrote {args.out / 'store.json'} and store.md")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
