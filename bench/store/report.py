"""bench/results/store.md from store.json."""

from __future__ import annotations

from typing import Any

NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:,.0f} MB"


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def _db_bytes(kind: str, size: dict[str, Any]) -> int:
    if kind == "sqlite":
        return int(size["file_bytes"]) + int(size["wal_bytes"])
    return int(size["database_bytes"])


def _busy(phase: dict[str, Any]) -> str:
    share = phase.get("machine_cpu_share") or {}
    return f"{share['busy'] * 100:.0f} %" if "busy" in share else "-"


def _left(check: dict[str, Any] | None) -> str:
    if not check:
        return "not checked"
    if "skipped" in check:
        return "not checked"
    return f"{check['values_found']} of {check['sampled_values']}"


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    backends = r["backends"]
    pg = backends.get("postgres", {}).get("versions")
    lines = [
        "# store",
        "",
        f"The metadata store with {r['sessions']:,} sessions (3 controllers, rooms of 1-3, joined evenly over the "
        f"last 120 days; every session has an IP, half a typed name, a tenth a phone number, a tenth an e-mail "
        f"address) on {m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB), {r['measured_at']}. "
        f"SQLite {m['sqlite']}"
        + (f", PostgreSQL {pg['postgresql']} on 127.0.0.1 (server defaults: shared_buffers "
           f"{pg['settings']['shared_buffers']}, synchronous_commit {pg['settings']['synchronous_commit']})"
           if pg else "")
        + ". The machine is shared with other work (load average "
        f"{m['loadavg_at_start'][0]} at the start, {m.get('loadavg_at_end', ['?'])[0]} at the end; the share of "
        "both cores busy during each step is in the tables): figures are from one run and include that contention.",
        "",
        "The goals are absolute (issue 4): there is no peer to compare with. For context the lookup is also "
        "timed as plain SQL on the blind-index column (the same SELECT through the bare driver: no transaction, "
        "no audit entry, no decryption), which shows what the store's audit and encryption layer costs.",
        "",
        "## Goals",
        "",
        "| backend | retention sweep (≤ 30 s) | met | lookup p99, worst of name/IP (≤ 50 ms) | met |",
        "|---|---|---|---|---|",
    ]
    for kind, b in backends.items():
        g = b["goals"]
        lines.append(f"| {NAMES[kind]} | {g['sweep_s']:.1f} s | {_yes(g['sweep_met'])} "
                     f"| {g['lookup_p99_ms']:.1f} ms | {_yes(g['lookup_met'])} |")
    lines += [
        "",
        f"## Lookup (`find_subject`, {r['settings']['lookup_window_days']}-day window, "
        f"{r['settings']['lookups_per_kind']} by name and {r['settings']['lookups_per_kind']} by IP, one at a time)",
        "",
        "A tenth of the probes are values nobody has; names are typed as an officer might (case and spacing vary). "
        "Each `find_subject` is one transaction that also appends its hash-chained audit entry.",
        "",
        "| backend | by | p50 | p90 | p99 | max | plain SQL p50 | plain SQL p99 | sessions found (mean / max) "
        "| cores busy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, b in backends.items():
        for by in ("name", "ip"):
            s = b["lookup"][by]["store_find_subject"]
            p = b["lookup"][by]["plain_sql_blind_index"]
            f = b["lookup"][by]["sessions_found_per_present_probe"]
            lines.append(
                f"| {NAMES[kind]} | {by} | {s['p50_ms']:.2f} ms | {s['p90_ms']:.2f} ms | {s['p99_ms']:.2f} ms "
                f"| {s['max_ms']:.2f} ms | {p['p50_ms']:.2f} ms | {p['p99_ms']:.2f} ms | {f['mean']} / {f['max']} "
                f"| {_busy(b['lookup']['phase'])} |")
    lines += [
        "",
        "## Retention sweep (`anonymise(retention_cutoff(now, 90), now)`, compaction included)",
        "",
        "The first sweep removes the quarter of the sessions older than 90 days (the worst case: a first run, or a "
        "month of missed runs); the next day's removes one day's worth, as the daily job does in steady state. "
        "*Compaction* is the backend's `compact` (SQLite: incremental vacuum and a TRUNCATE checkpoint; PostgreSQL: "
        "VACUUM (FULL) of sessions, rooms, visits), timed by wrapping it; *transaction* is the rest. "
        "*Removed values left* samples "
        "ciphertexts and unshared blind indexes of the removed sessions before the sweep and searches the database "
        "files for them afterwards (SQLite: the file and its WAL; PostgreSQL: the sessions table's heap and index "
        "files after a CHECKPOINT).",
        "",
        "| backend | sweep | rows anonymised | transaction | compaction | size before | size after "
        "| removed values left | cores busy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, b in backends.items():
        for label, key in (("first (¼ of rows)", "sweep"), ("next day", "sweep_next_day")):
            s = b[key]
            lines.append(
                f"| {NAMES[kind]}, {label} | {s['wall_s']:.1f} s | {s['anonymised']:,} | {s['transaction_s']:.1f} s "
                f"| {s['compact_s']:.1f} s | {_mb(_db_bytes(kind, s['size_before']))} "
                f"| {_mb(_db_bytes(kind, s['size_after']))} | {_left(s.get('removed_values_still_in_files'))} "
                f"| {_busy(s)} |")
    full = backends.get("postgres", {}).get("context_vacuum_full")
    if full:
        lines += [
            "",
            f"The store compacts PostgreSQL with VACUUM (FULL): a plain VACUUM only marks the space reusable and "
            f"leaves removed ciphertexts in the table's files (an earlier run of this bench found all sampled ones "
            f"there). For context, one more `VACUUM FULL sessions` afterwards took {full['wall_s']:.1f} s (an "
            f"ACCESS EXCLUSIVE lock for that long) and left {_left(full.get('removed_values_still_in_files'))} "
            f"sampled removed values in the new files.",
        ]
    lines += [
        "",
        "## Controller export and seeding",
        "",
        "| backend | export (`export_controller`) | sessions | plain SQL select of the same rows "
        "| seeding (setup) | of which sealing | of which bulk insert |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, b in backends.items():
        e, s = b["export"], b["seed"]
        lines.append(f"| {NAMES[kind]} | {e['wall_s']:.1f} s | {e['sessions']:,} | {e['plain_sql_select_s']:.1f} s "
                     f"| {s['wall_s']:.0f} s | {s['seal_s']:.0f} s | {s['insert_s']:.0f} s |")
    lines += [
        "",
        "Seeding seals every value as `SqlStore.open_session` does (AES-256-GCM ciphertext and blind index per "
        "personal column) and loads it in bulk through the driver (sqlite3 executemany; asyncpg COPY).",
    ]
    notes = r.get("notes")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    lines += ["", "Raw figures, query plans, sizes, I/O and load per step: `store.json`. Method, what dominates and "
              "the proposed SQLite compaction change: `bench/store/README.md`.", ""]
    return "\n".join(lines)
