"""Where SQLite's retention sweep spends its time, and what other compaction strategies would cost.

Not part of `make bench-store`: a diagnostic for bench/README.md ("store", "What dominates"). Seeds one
SQLite file like bench/store/run.py (kept as a pristine copy under --workdir), then, for each variant, on a
fresh copy of it: runs the store's sweep statements one by one (the SQL of `SqlStore.anonymise`, with
the store's connection settings) and the variant's compaction, timing each step, and checks sampled
removed values against the file and its WAL afterwards (ciphertexts and unshared blind indexes).

Variants (each proposed store change is one of these):
  baseline     what the store does now: default page cache, VACUUM, wal_checkpoint(TRUNCATE)
  cache        PRAGMA cache_size = -262144 (256 MiB) on the sweep's connection, then as baseline
  incremental  file converted once to auto_vacuum=INCREMENTAL (timed apart: a migration would do it);
               PRAGMA incremental_vacuum instead of VACUUM, then wal_checkpoint(TRUNCATE)
  checkpoint   no VACUUM at all, only wal_checkpoint(TRUNCATE) (secure_delete alone)
  partial      as incremental, and the name/phone/email blind-index indexes made partial
               (WHERE <kind>_index IS NOT NULL: only sessions that have the value), rebuilt in the set-up
  rooms        as incremental, plus an index on rooms (expires_at) for the sweep's room clean-up
Each variant runs the first sweep (a quarter of the rows) and then the next day's (a 120th).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.store.data import Population  # noqa: E402
from bench.store.run import RESULTS, SqliteBackend, _blobs, _sample_sql, _scan, log, machine_info, seed  # noqa: E402
from metadata_store import audit  # noqa: E402
from metadata_store.crypto import KeyStore  # noqa: E402
from metadata_store.sql import retention_cutoff  # noqa: E402
from metadata_store.sqlite import DIALECT  # noqa: E402
from metadata_store.sqlite import _param as p  # noqa: E402

VARIANTS = ("baseline", "cache", "incremental", "checkpoint", "partial", "rooms")
PARTIAL_INDEXES = [
    f"CREATE INDEX sessions_{kind}_index ON sessions (controller_id, {kind}_index, joined_at)"
    f" WHERE {kind}_index IS NOT NULL"
    for kind in ("name", "phone", "email")
]
BIG_CACHE = -262144  # KiB: 256 MiB


def connect(path: Path) -> sqlite3.Connection:
    """The store's connection settings (metadata_store/sqlite.py, SQLiteStore.open)."""
    db = sqlite3.connect(path, isolation_level=None, timeout=60)
    for pragma in ("journal_mode=WAL", "secure_delete=ON", "foreign_keys=ON", "synchronous=NORMAL"):
        db.execute(f"PRAGMA {pragma}")
    return db


def sizes(path: Path) -> dict[str, int]:
    wal = path.with_name(path.name + "-wal")
    return {"file_bytes": path.stat().st_size, "wal_bytes": wal.stat().st_size if wal.exists() else 0}


def sweep_once(db: sqlite3.Connection, work: Path, variant: str, now: dt.datetime) -> dict[str, Any]:
    """One sweep as of `now`: the store's statements one by one, then the variant's compaction."""
    cutoff = retention_cutoff(now, 90)
    out: dict[str, Any] = {"now": now.isoformat(), "steps_s": {}}
    steps = out["steps_s"]
    gone = _blobs(db.execute(_sample_sql(True), (p(cutoff),) * 3 + (30,)).fetchall())
    kept = _blobs(db.execute(_sample_sql(False), (p(cutoff),) * 3 + (3,)).fetchall())
    out["size_before"] = sizes(work)
    d = DIALECT

    def step(name: str, sql: str, *args: Any) -> int:
        t0 = time.perf_counter()
        rowcount = db.execute(sql, tuple(p(a) for a in args)).rowcount
        steps[name] = round(time.perf_counter() - t0, 3)
        return rowcount

    cpu0 = time.process_time()
    total0 = time.perf_counter()
    step("begin", "BEGIN IMMEDIATE")
    out["visits"] = step(
        "insert_visits",
        "INSERT INTO visits (visitor, day, duration_minutes, participants, route, setup_ms)"
        f" SELECT {d.random_hex}, {d.day('joined_at')}, {d.rounded_minutes('joined_at', 'left_at')},"
        " participants, route, (setup_ms + 50) / 100 * 100"
        " FROM sessions WHERE joined_at < ? AND restricted_at IS NULL ORDER BY random()", cutoff)
    out["anonymised"] = step("delete_sessions", "DELETE FROM sessions WHERE joined_at < ?", cutoff)
    out["rooms_removed"] = step(
        "delete_rooms", "DELETE FROM rooms WHERE expires_at < ? AND NOT EXISTS"
        " (SELECT 1 FROM sessions WHERE sessions.room_id = rooms.id)", cutoff)
    head = db.execute("SELECT seq, at, actor, action, object_id, prev_hash, hash FROM audit_log"
                      " ORDER BY seq DESC LIMIT 1").fetchone()
    prev = None if head is None else audit.AuditEntry(int(head[0]), dt.datetime.fromisoformat(head[1]), *head[2:])
    entry = audit.append(prev, "job:retention", audit.Action.SESSION_ANONYMISE,
                         f"before:{audit.format_timestamp(cutoff)}", now)
    step("audit", "INSERT INTO audit_log (seq, at, actor, action, object_id, prev_hash, hash)"
         " VALUES (?, ?, ?, ?, ?, ?, ?)", entry.seq, entry.at, entry.actor, entry.action, entry.object_id,
         entry.prev_hash, entry.hash)
    out["wal_bytes_before_commit"] = sizes(work)["wal_bytes"]
    step("commit", "COMMIT")
    out["transaction_s"] = round(time.perf_counter() - total0, 3)
    out["freelist_pages_after_commit"] = db.execute("PRAGMA freelist_count").fetchone()[0]
    t0 = time.perf_counter()
    if variant in ("baseline", "cache"):
        step("vacuum", "VACUUM")
    elif variant in ("incremental", "partial", "rooms"):
        t1 = time.perf_counter()
        # Not db.execute: the pragma returns no columns, so Python's sqlite3 steps it once, which frees
        # one page. executescript steps it to the end.
        db.executescript("PRAGMA incremental_vacuum;")
        steps["incremental_vacuum"] = round(time.perf_counter() - t1, 3)
    out["wal_bytes_before_checkpoint"] = sizes(work)["wal_bytes"]
    t1 = time.perf_counter()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    steps["wal_checkpoint_truncate"] = round(time.perf_counter() - t1, 3)
    out["compaction_s"] = round(time.perf_counter() - t0, 3)
    out["sweep_s"] = round(out["transaction_s"] + out["compaction_s"], 3)
    out["process_cpu_s"] = round(time.process_time() - cpu0, 3)
    out["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    out["freelist_pages_after"] = db.execute("PRAGMA freelist_count").fetchone()[0]
    out["size_after"] = sizes(work)
    files = [work] + ([Path(str(work) + "-wal")] if Path(str(work) + "-wal").exists() else [])
    out["removed_values_still_in_files"] = {"sampled": len(gone), **_scan(files, gone),
                                            "control_kept_found": _scan(files, kept)["values_found"],
                                            "control_kept_sampled": len(kept)}
    return out


def run_variant(pristine: Path, work: Path, variant: str, now: dt.datetime) -> dict[str, Any]:
    """On a fresh copy of the pristine file: the first sweep (a quarter of the rows), then the next day's."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(work) + suffix).unlink(missing_ok=True)
    shutil.copyfile(pristine, work)
    out: dict[str, Any] = {"variant": variant}
    db = connect(work)
    if variant in ("incremental", "partial", "rooms"):
        t0 = time.perf_counter()
        if variant == "partial":
            for statement in PARTIAL_INDEXES:
                db.execute(f"DROP INDEX {statement.split()[2]}")
                db.execute(statement)
        if variant == "rooms":
            db.execute("CREATE INDEX rooms_expires_at ON rooms (expires_at)")
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        db.execute("VACUUM")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        out["one_time_conversion_s"] = round(time.perf_counter() - t0, 3)
        out["plans"] = {
            "find_subject_by_name": [r[-1] for r in db.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM sessions WHERE name_index = ? AND controller_id = ?"
                " AND joined_at >= ? AND joined_at < ? ORDER BY id", ("x", "bench-a", "a", "b"))],
            "rooms_cleanup": [r[-1] for r in db.execute(
                "EXPLAIN QUERY PLAN DELETE FROM rooms WHERE expires_at < ? AND NOT EXISTS"
                " (SELECT 1 FROM sessions WHERE sessions.room_id = rooms.id)", ("x",))],
        }
    if variant == "cache":
        db.execute(f"PRAGMA cache_size = {BIG_CACHE}")
    out["first"] = sweep_once(db, work, variant, now)
    out["next_day"] = sweep_once(db, work, variant, now + dt.timedelta(days=1))
    db.close()
    return out


async def make_pristine(path: Path, sessions: int, now: dt.datetime) -> None:
    backend = SqliteBackend(path.parent / "seed", KeyStore(path.parent / "keys"))
    await seed(backend, Population(sessions, now), now)
    shutil.move(backend.path, path)
    shutil.rmtree(path.parent / "seed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, required=True, help="keeps the pristine seeded file between runs")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated; repeat one to rerun it")
    parser.add_argument("--out", type=Path, default=RESULTS / "store.sweep_variants.json",
                        help="results file (default bench/results/store.sweep_variants.json)")
    parser.add_argument("--append", action="store_true", help="add this run to the runs already in --out")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    pristine = args.workdir / f"pristine-{args.sessions}.sqlite3"
    meta = pristine.with_suffix(".json")
    if not pristine.exists():
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        log(f"seeding {args.sessions:,} sessions into {pristine}")
        asyncio.run(make_pristine(pristine, args.sessions, now))
        meta.write_text(json.dumps({"now": now.isoformat()}))
    now = dt.datetime.fromisoformat(json.loads(meta.read_text())["now"])
    results: list[dict[str, Any]] = []
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    machine = machine_info()
    for variant in args.variants.split(","):
        log(f"variant {variant}")
        result = run_variant(pristine, args.workdir / "work.sqlite3", variant, now)
        log(json.dumps(result))
        results.append(result)
    machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    run = {"measured_at": started, "sessions": args.sessions, "variants": args.variants, "machine": machine,
           "results": results}
    runs = json.loads(args.out.read_text())["runs"] if args.append and args.out.exists() else []
    args.out.write_text(json.dumps({"bench": "store.sweep_variants", "runs": [*runs, run]}, indent=1) + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
