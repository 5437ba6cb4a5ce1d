"""The store's data handling, checked the way a controller's privacy officer would check it.

Every test runs on SQLite and on PostgreSQL (the `backend` and `store` fixtures), with a frozen clock:
times are passed in, never read. Where a promise is about what is left in the database itself (bytes
of deleted values, the audit log's integrity, encryption at rest) the test reads the database through
its driver (`Backend.raw`), not through the store.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import os
import re
import secrets
import shutil
import sqlite3
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from metadata_store import audit
from metadata_store.crypto import SERVICE_KEY_ID, CryptoError, KeyStore, MissingKey
from metadata_store.postgres import MIGRATIONS as POSTGRES_MIGRATIONS
from metadata_store.schema import TABLES
from metadata_store.sql import SqlStore, retention_cutoff
from metadata_store.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from metadata_store.sqlite import SQLiteStore
from metadata_store.store import DEFAULT_CONTROLLER, Conflict, NotFound, OperatorRecord
from tests.store.conftest import Backend, RawDb

UTC = dt.UTC
T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
"""The frozen "now" of most tests."""
MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
US = dt.timedelta(microseconds=1)
EVER = (dt.datetime(2000, 1, 1, tzinfo=UTC), dt.datetime(2100, 1, 1, tzinfo=UTC))
"""A search window that covers every session of these tests."""
ACME = "acme"
OFFICER = "priv-officer"
REQ = "req-0123456789abcdef"

ANNA = {"ip": "192.0.2.7", "name": "Anna de Vries", "phone": "+31 6 12345678", "email": "Anna@Example.NL"}
BRAM = {"ip": "198.51.100.23", "name": "Bram Bakker", "phone": "+31 6 87654321", "email": "bram@example.nl"}


# --- helpers --------------------------------------------------------------------------------------------


async def make_room(
    store: SqlStore, room_id: str, created: dt.datetime, expires: dt.datetime,
    controller: str = DEFAULT_CONTROLLER,
) -> str:
    await store.create_room(room_id, created, expires, controller)
    return room_id


async def join(store: SqlStore, room_id: str, person: dict[str, str], at: dt.datetime) -> int:
    return await store.open_session(
        room_id, person["ip"], person.get("name"), at, phone=person.get("phone"), email=person.get("email")
    )


async def find(store: SqlStore, kind: str, value: str, controller: str = DEFAULT_CONTROLLER,
               window: tuple[dt.datetime, dt.datetime] = EVER) -> list[int]:
    found = await store.find_subject(controller, kind, value, window[0], window[1], OFFICER, T0, REQ)
    return [s.id for s in found]


async def sealed_values(raw: RawDb, session_id: int) -> list[bytes]:
    """The bytes a session's personal values occupy at rest: each ciphertext and each blind index."""
    [row] = await raw.fetch(
        "SELECT ip, ip_index, name, name_index, phone, phone_index, email, email_index FROM sessions WHERE id = ?",
        session_id,
    )
    return [bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode() for v in row if v is not None]


async def raw_audit_text(raw: RawDb) -> str:
    rows = await raw.fetch("SELECT seq, at, actor, action, object_id, prev_hash, hash FROM audit_log ORDER BY seq")
    return "\n".join(" ".join(str(v) for v in row) for row in rows)


async def audit_since(store: SqlStore, seq: int) -> list[tuple[str, str, str]]:
    return [(e.actor, e.action, e.object_id) for e in await store.audit_entries(after_seq=seq)]


async def audit_head_seq(store: SqlStore) -> int:
    entries = await store.audit_entries()
    return entries[-1].seq if entries else 0


def by_id(record: Any) -> Any:
    return record.id


def personal_strings(*people: dict[str, str]) -> list[str]:
    """Every value as typed and in its normalised forms, lowercased for a case-insensitive search."""
    out: list[str] = []
    for person in people:
        for kind, value in person.items():
            out += [value.lower(), " ".join(value.lower().split())]
            if kind == "phone":
                digits = re.sub(r"[^0-9]", "", value)
                out += ["+" + digits, "0" + digits.removeprefix("31"), digits]
    return out


# --- retention ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "days", "cutoff"),
    [
        # 90 days back from 1 May 2027 is 31 January, past the 3 calendar months February allows.
        (dt.datetime(2027, 5, 1, tzinfo=UTC), 90, dt.datetime(2027, 2, 1, tzinfo=UTC)),
        (dt.datetime(2028, 5, 1, tzinfo=UTC), 90, dt.datetime(2028, 2, 1, tzinfo=UTC)),  # leap year: 1 Feb too
        (dt.datetime(2027, 5, 31, 8, 0, tzinfo=UTC), 365, dt.datetime(2027, 2, 28, 8, 0, tzinfo=UTC)),
        (T0, 90, T0 - 90 * DAY),  # Aug-Oct: 90 days is less than 3 months
        (T0, 30, T0 - 30 * DAY),
        (T0, 1, T0 - DAY),
        (T0, 10_000, dt.datetime(2026, 8, 1, 12, 0, tzinfo=UTC)),
    ],
)
def test_the_retention_cutoff_never_reaches_past_three_calendar_months(
    now: dt.datetime, days: int, cutoff: dt.datetime
) -> None:
    assert retention_cutoff(now, days) == cutoff


@pytest.mark.parametrize("days", [0, -1, -90])
def test_a_retention_period_under_one_day_is_refused(days: int) -> None:
    with pytest.raises(ValueError, match="at least 1 day"):
        retention_cutoff(T0, days)


async def test_anonymising_deletes_old_sessions_and_keeps_one_anonymous_visit_each(
    store: SqlStore, backend: Backend
) -> None:
    cutoff = retention_cutoff(T0, 90)  # 2026-08-03 12:00
    july = dt.datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
    old_room = await make_room(store, "room-old-kx81Qv0wT5bZ", july - HOUR, july + DAY)
    empty_expired = await make_room(store, "room-empty-Jd03mA7qLp", july, july + 14 * DAY)
    edge_room = await make_room(store, "room-edge-Hq92nB4sWe", cutoff - DAY, T0 + DAY)
    new_room = await make_room(store, "room-new-Pz57cV2yRu", T0 - DAY, T0 + DAY)
    future_room = await make_room(store, "room-future-Ls40dX9gNo", T0 - DAY, T0 + 30 * DAY)

    full = await join(store, old_room, ANNA, july)
    await store.note_participants([full], 3)
    await store.report_session(full, "relay", 1249)
    await store.close_session(full, july + 37 * MINUTE)
    # Joined 22:30 at UTC-2, which is the next UTC day.
    late = await join(store, old_room, BRAM, dt.datetime(2026, 7, 1, 22, 30, tzinfo=dt.timezone(-2 * HOUR)))
    await store.report_session(late, "direct", 1250)
    await store.close_session(late, dt.datetime(2026, 7, 2, 0, 38, tzinfo=UTC), participants=2)
    never_closed = await store.open_session(old_room, "203.0.113.5", None, july + HOUR)
    restricted = await store.open_session(old_room, "203.0.113.6", "Cor", july + 2 * HOUR)
    await store.report_session(restricted, "relay", 900)
    await store.close_session(restricted, july + 3 * HOUR, participants=2)
    await store.restrict_sessions(DEFAULT_CONTROLLER, [restricted], OFFICER, T0 - 10 * DAY, REQ)
    just_before = await store.open_session(edge_room, "203.0.113.7", "Dirk", cutoff - US, email="d@example.nl")
    await store.report_session(just_before, "direct", 49)
    await store.close_session(just_before, cutoff + HOUR)
    at_cutoff = await store.open_session(edge_room, "203.0.113.8", "Eva", cutoff, phone="0612121212")
    recent = await join(store, new_room, {"ip": "2001:db8::5", "name": "Fleur"}, T0 - HOUR)
    kept_before = {s.id: s for s in await store.list_sessions() if s.id in (at_cutoff, recent)}
    gone = [full, late, never_closed, restricted, just_before]
    identifiers: set[str] = {DEFAULT_CONTROLLER, old_room, empty_expired, edge_room, new_room, future_room}
    session_ids = {s.id for s in await store.list_sessions()}
    for session in await store.list_sessions():
        identifiers |= {str(session.id), session.ip, *(v for v in (session.name, session.phone, session.email) if v)}
    for session_id in [*gone, at_cutoff, recent]:
        identifiers |= {v.hex() if b"\x00" in v or not v.isascii() else v.decode()
                        for v in await sealed_values(backend.raw, session_id)}
    head = await audit_head_seq(store)

    result = await store.anonymise(cutoff, T0)

    assert (result.cutoff, result.anonymised, result.visits, result.rooms_removed) == (cutoff, 5, 4, 2)
    assert await audit_since(store, head) == [
        ("job:retention", "session.anonymise", "before:2026-08-03T12:00:00.000000Z")
    ]
    # Newer sessions, including the one that joined exactly at the cutoff, are untouched.
    assert {s.id: s for s in await store.list_sessions()} == kept_before
    assert sorted(r[0] for r in await backend.raw.fetch("SELECT id FROM sessions")) == [at_cutoff, recent]
    for person in (ANNA, BRAM):
        for kind in ("ip", "name", "phone", "email"):
            assert await find(store, kind, person[kind]) == []
    # One visit per non-restricted session: UTC day, duration to 5 minutes, setup to 100 ms.
    visits = await store.list_visits()
    telemetry = [(v.day, v.duration_minutes, v.participants, v.route, v.setup_ms) for v in visits]
    assert sorted(telemetry, key=repr) == sorted([
        ("2026-07-01", 35, 3, "relay", 1200),  # 37 min, 1249 ms
        ("2026-07-02", 10, 2, "direct", 1300),  # 8 min, 1250 ms
        ("2026-07-01", None, None, None, None),  # never closed, nothing reported
        ("2026-08-03", 60, None, "direct", 0),  # 60 min and 1 us, 49 ms
    ], key=repr)
    visitors = [v.visitor for v in visits]
    assert len(set(visitors)) == len(visitors)
    for visitor in visitors:
        assert re.fullmatch(r"[0-9a-f]{32}", visitor)
        assert int(visitor, 16) not in session_ids
        assert visitor not in identifiers
        assert not any(len(i) >= 8 and (i.lower() in visitor or visitor in i.lower()) for i in identifiers)
    # Rooms: expired and now empty ones go; rooms with a kept session or a future expiry stay.
    assert await store.get_room(old_room) is None
    assert await store.get_room(empty_expired) is None
    for room in (edge_room, new_room, future_room):
        assert await store.get_room(room) is not None

    again = await store.anonymise(cutoff, T0 + MINUTE)
    assert (again.anonymised, again.visits, again.rooms_removed) == (0, 0, 0)
    assert await store.list_visits() == visits
    assert {s.id: s for s in await store.list_sessions()} == kept_before


async def test_visits_round_duration_and_setup_time_alike_on_both_backends(store: SqlStore) -> None:
    """Halves round up (away from zero), to the microsecond, whichever database does the sum."""
    start = dt.datetime(2026, 7, 1, 10, 0, 0, 900_000, tzinfo=UTC)
    room = await make_room(store, "room-round-Vb38kL1pXs", start, start + DAY)
    cases = [  # (call length, setup ms) -> (minutes, setup ms) kept
        (dt.timedelta(minutes=2, seconds=29, microseconds=999_999), 49, 0, 0),
        (dt.timedelta(minutes=2, seconds=30), 50, 5, 100),
        (dt.timedelta(minutes=2, seconds=29, microseconds=500_000), 149, 0, 100),  # crosses a second boundary
        (dt.timedelta(minutes=7, seconds=30), 150, 10, 200),
        (dt.timedelta(minutes=12, seconds=30), 1249, 15, 1200),
        (dt.timedelta(minutes=182, seconds=30), 1250, 185, 1300),
        (dt.timedelta(days=3, minutes=2, seconds=30), 600_000, 4325, 600_000),
        (dt.timedelta(0), 0, 0, 0),
    ]
    for length, setup, _, _ in cases:
        session = await store.open_session(room, "192.0.2.1", None, start)
        await store.report_session(session, "direct", setup)
        await store.close_session(session, start + length)
    await store.anonymise(start + 30 * DAY, start + 30 * DAY)
    got = sorted((v.duration_minutes, v.setup_ms) for v in await store.list_visits())
    assert got == sorted((minutes, kept) for _, _, minutes, kept in cases)


async def test_anonymising_the_next_day_takes_the_session_that_was_at_the_cutoff(store: SqlStore) -> None:
    cutoff = retention_cutoff(T0, 90)
    room = await make_room(store, "room-edge-Hq92nB4sWe", cutoff - DAY, T0 + DAY)
    session = await store.open_session(room, "203.0.113.8", "Eva", cutoff)
    assert (await store.anonymise(cutoff, T0)).anonymised == 0
    tomorrow = T0 + DAY
    result = await store.anonymise(retention_cutoff(tomorrow, 90), tomorrow)
    assert result.anonymised == 1 and result.visits == 1
    assert session not in [s.id for s in await store.list_sessions()]


async def test_deleted_values_do_not_linger_on_disk(backend: Backend) -> None:
    """SQLite: the file and its WAL; PostgreSQL: the sessions table's and its indexes' files."""
    store = await backend.open_store()
    try:
        await store.ensure_controller(DEFAULT_CONTROLLER, "Default", T0)
        july = dt.datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
        old_room = await make_room(store, "room-old-kx81Qv0wT5bZ", july, july + DAY)
        new_room = await make_room(store, "room-new-Pz57cV2yRu", T0 - DAY, T0 + DAY)
        old = await join(store, old_room, ANNA, july)
        erased = await join(store, new_room, BRAM, T0 - HOUR)
        rectified = await store.open_session(new_room, "203.0.113.9", "Gijs Oudenaam", T0 - HOUR)
        kept = await store.open_session(new_room, "203.0.113.10", "Hanna", T0 - HOUR)
        secrets_of = {s: await sealed_values(backend.raw, s) for s in (old, erased, rectified, kept)}
        [[old_name_blob, old_name_index]] = await backend.raw.fetch(
            "SELECT name, name_index FROM sessions WHERE id = ?", rectified
        )
        on_disk = await backend.raw.stored_bytes()
        for values in secrets_of.values():  # the check can see them while they are there
            assert values and all(v in on_disk for v in values)

        await store.anonymise(retention_cutoff(T0, 90), T0)
        on_disk = await backend.raw.stored_bytes()
        assert [v for v in secrets_of[old] if v in on_disk] == []

        await store.erase_sessions(DEFAULT_CONTROLLER, [erased], OFFICER, T0, REQ)
        await store.rectify_sessions(DEFAULT_CONTROLLER, [rectified], {"name": "Gijs Nieuwnaam"}, OFFICER, T0, REQ)
        on_disk = await backend.raw.stored_bytes()
        assert [v for v in secrets_of[erased] if v in on_disk] == []
        assert bytes(old_name_blob) not in on_disk and old_name_index.encode() not in on_disk
        assert all(v in on_disk for v in secrets_of[kept])  # what is kept is still there
    finally:
        await store.close()


async def test_erased_values_do_not_linger_in_whole_pages_emptied_mid_table(backend: Backend) -> None:
    """Erasing every row of some pages in the middle of the table: a plain PostgreSQL VACUUM would
    leave those pages' bytes as they were (and SQLite without secure_delete would too)."""
    store = await backend.open_store()
    try:
        await store.ensure_controller(DEFAULT_CONTROLLER, "Default", T0)
        room = await make_room(store, "room-pages-Xc81Lm0qT5bZ", T0 - DAY, T0 + DAY)
        ids = [await store.open_session(room, f"198.51.{100 + i // 250}.{i % 250}", f"Persoon nummer {i:04d}",
                                        T0 - HOUR, email=f"persoon{i:04d}@example.nl") for i in range(400)]
        doomed = ids[100:300]
        sealed = [v for s in doomed[::10] for v in await sealed_values(backend.raw, s)]
        on_disk = await backend.raw.stored_bytes()
        assert sealed and all(v in on_disk for v in sealed)  # the check can see them while they are there
        await store.erase_sessions(DEFAULT_CONTROLLER, doomed, OFFICER, T0, REQ)
        on_disk = await backend.raw.stored_bytes()
        assert [v for v in sealed if v in on_disk] == []
        kept = await sealed_values(backend.raw, ids[-1])
        assert all(v in on_disk for v in kept)
    finally:
        await store.close()


# --- data subjects --------------------------------------------------------------------------------------


async def _anna_and_bram(store: SqlStore) -> tuple[int, int]:
    room = await make_room(store, "room-a-Wq83hF5kLz2N", T0 - DAY, T0 + DAY)
    return await join(store, room, ANNA, T0 - HOUR), await join(store, room, BRAM, T0 - HOUR)


async def test_a_subject_is_found_by_normalised_name_phone_email_and_ip(store: SqlStore) -> None:
    anna, bram = await _anna_and_bram(store)
    room = "room-a-Wq83hF5kLz2N"
    mapped = await store.open_session(room, "::ffff:203.0.113.44", None, T0 - HOUR)
    searches = {
        ("name", "Anna de Vries"): [anna],
        ("name", "  anna   DE vries "): [anna],
        ("name", "ANNA DE VRIES"): [anna],
        ("name", "Anna de Vrie"): [],
        ("name", "Ånna de Vries"): [],  # accents are kept: a different name
        ("phone", "06-1234 5678"): [anna],
        ("phone", "0031 6 1234 5678"): [anna],
        ("phone", "+31612345678"): [anna],
        ("phone", "06-1234 5679"): [],
        ("email", "anna@example.nl"): [anna],
        ("email", " ANNA@EXAMPLE.NL "): [anna],
        ("email", "anna@example.com"): [],
        ("ip", "192.0.2.7"): [anna],
        ("ip", "::ffff:192.0.2.7"): [anna],
        ("ip", "::ffff:c000:207"): [anna],
        ("ip", "192.0.2.70"): [],
        ("ip", "203.0.113.44"): [mapped],
        ("ip", "198.51.100.23"): [bram],
    }
    for (kind, value), expected in searches.items():
        assert await find(store, kind, value) == expected, (kind, value)
    [record] = await store.find_subject(DEFAULT_CONTROLLER, "phone", "06-1234 5678", *EVER, OFFICER, T0, REQ)
    assert (record.ip, record.name, record.phone, record.email) == (
        ANNA["ip"], ANNA["name"], ANNA["phone"], ANNA["email"]
    )
    with pytest.raises(ValueError, match="search by one of"):
        await find(store, "room_id", room)


async def test_a_subject_is_found_only_within_the_time_window(store: SqlStore) -> None:
    room = await make_room(store, "room-w-Xy27fG8hJk4M", T0 - 30 * DAY, T0 + DAY)
    early = await join(store, room, ANNA, T0 - 10 * DAY)
    middle = await join(store, room, ANNA, T0 - DAY)
    late = await join(store, room, ANNA, T0)
    assert await find(store, "name", "Anna de Vries", window=(T0 - DAY, T0)) == [middle]  # [since, until)
    assert await find(store, "name", "Anna de Vries", window=(T0 - DAY + US, T0 + US)) == [late]
    assert await find(store, "ip", ANNA["ip"], window=(T0 - 10 * DAY, T0 + US)) == [early, middle, late]
    assert await find(store, "email", ANNA["email"], window=(T0 - 30 * DAY, T0 - 10 * DAY)) == []


async def test_a_subject_is_found_only_within_its_own_controller(store: SqlStore, backend: Backend) -> None:
    anna, _ = await _anna_and_bram(store)
    await store.ensure_controller(ACME, "Acme B.V.", T0)
    acme_room = await make_room(store, "room-acme-Tn61pR3vBq", T0 - DAY, T0 + DAY, ACME)
    acme_anna = await join(store, acme_room, ANNA, T0 - HOUR)
    for kind in ("ip", "name", "phone", "email"):
        assert await find(store, kind, ANNA[kind]) == [anna]
        assert await find(store, kind, ANNA[kind], controller=ACME) == [acme_anna]
    # The same value has a different blind index under each controller's key: no linking across them.
    rows = await backend.raw.fetch(
        "SELECT ip_index, name_index, phone_index, email_index FROM sessions WHERE id IN (?, ?) ORDER BY id",
        anna, acme_anna,
    )
    assert all(a != b for a, b in zip(rows[0], rows[1], strict=True))
    with pytest.raises(NotFound):
        await find(store, "name", ANNA["name"], controller="nobody")


async def test_another_controllers_sessions_are_refused_by_every_subject_action(store: SqlStore) -> None:
    anna, _ = await _anna_and_bram(store)
    await store.ensure_controller(ACME, "Acme B.V.", T0)
    acme_room = await make_room(store, "room-acme-Tn61pR3vBq", T0 - DAY, T0 + DAY, ACME)
    acme_anna = await join(store, acme_room, ANNA, T0 - HOUR)
    before = await store.list_sessions()
    for ids in ([acme_anna], [anna, acme_anna]):
        with pytest.raises(NotFound):
            await store.export_sessions(DEFAULT_CONTROLLER, ids, OFFICER, T0, REQ)
        with pytest.raises(NotFound):
            await store.rectify_sessions(DEFAULT_CONTROLLER, ids, {"name": "X"}, OFFICER, T0, REQ)
        with pytest.raises(NotFound):
            await store.restrict_sessions(DEFAULT_CONTROLLER, ids, OFFICER, T0, REQ)
        with pytest.raises(NotFound):
            await store.erase_sessions(DEFAULT_CONTROLLER, ids, OFFICER, T0, REQ)
    assert await store.list_sessions() == before  # nothing changed, for either controller
    assert [s.id for s in await store.export_sessions(ACME, [acme_anna], OFFICER, T0, REQ)] == [acme_anna]


async def test_export_returns_the_subjects_sessions_decrypted(store: SqlStore) -> None:
    anna, bram = await _anna_and_bram(store)
    await store.report_session(anna, "direct", 800)
    exported = await store.export_sessions(DEFAULT_CONTROLLER, [anna], OFFICER, T0, REQ)
    assert len(exported) == 1
    record = exported[0]
    assert (record.id, record.ip, record.name, record.phone, record.email, record.route, record.setup_ms) == (
        anna, ANNA["ip"], ANNA["name"], ANNA["phone"], ANNA["email"], "direct", 800
    )
    both = await store.export_sessions(DEFAULT_CONTROLLER, [bram, anna, bram], OFFICER, T0, REQ)
    assert [s.id for s in both] == [anna, bram]


async def test_rectifying_replaces_typed_values_and_none_clears_one(store: SqlStore) -> None:
    anna, bram = await _anna_and_bram(store)
    changed = await store.rectify_sessions(
        DEFAULT_CONTROLLER, [anna], {"name": "Anna Jansen", "phone": None}, OFFICER, T0, REQ
    )
    assert changed == 1
    assert await find(store, "name", "anna jansen") == [anna]
    assert await find(store, "name", ANNA["name"]) == []
    assert await find(store, "phone", ANNA["phone"]) == []
    assert await find(store, "email", ANNA["email"]) == [anna]  # not named: unchanged
    [record] = await store.export_sessions(DEFAULT_CONTROLLER, [anna], OFFICER, T0, REQ)
    assert (record.ip, record.name, record.phone, record.email) == (ANNA["ip"], "Anna Jansen", None, ANNA["email"])
    [other] = await store.export_sessions(DEFAULT_CONTROLLER, [bram], OFFICER, T0, REQ)
    assert (other.name, other.phone) == (BRAM["name"], BRAM["phone"])
    for changes in ({"ip": "192.0.2.99"}, {"name": "X", "ip": "192.0.2.99"}, {}, {"room_id": "x"}):
        with pytest.raises(ValueError, match="rectify changes name, phone or email"):
            await store.rectify_sessions(DEFAULT_CONTROLLER, [anna], changes, OFFICER, T0, REQ)
    assert await find(store, "ip", ANNA["ip"]) == [anna]


async def test_rectifying_no_sessions_changes_nothing(store: SqlStore) -> None:
    """A request whose search found nothing: the officer still records that nothing was rectified."""
    await _anna_and_bram(store)
    before = await store.list_sessions()
    head = await audit_head_seq(store)
    assert await store.rectify_sessions(DEFAULT_CONTROLLER, [], {"name": "Anna Jansen"}, OFFICER, T0, REQ) == 0
    assert await store.list_sessions() == before
    assert await audit_since(store, head) == [(OFFICER, "subject.rectify", REQ)]


async def test_erasing_deletes_the_rows_and_nothing_finds_them(store: SqlStore, backend: Backend) -> None:
    anna, bram = await _anna_and_bram(store)
    room = "room-a-Wq83hF5kLz2N"
    again = await join(store, room, ANNA, T0 - MINUTE)
    assert await store.erase_sessions(DEFAULT_CONTROLLER, [anna, again], OFFICER, T0, REQ) == 2
    assert await backend.raw.fetch("SELECT id FROM sessions WHERE id IN (?, ?)", anna, again) == []
    assert [s.id for s in await store.list_sessions()] == [bram]
    for kind in ("ip", "name", "phone", "email"):
        assert await find(store, kind, ANNA[kind]) == []
    with pytest.raises(NotFound):
        await store.export_sessions(DEFAULT_CONTROLLER, [anna], OFFICER, T0, REQ)
    # Erased means no anonymous telemetry either: retention has nothing of them to keep.
    assert (await store.anonymise(T0 + US, T0)).visits == 1  # Bram's only


async def test_restricted_sessions_are_kept_for_the_subject_but_out_of_processing(
    store: SqlStore, backend: Backend
) -> None:
    anna, bram = await _anna_and_bram(store)
    await store.note_participants([anna, bram], 2)
    await store.report_session(anna, "relay", 700)
    assert await store.restrict_sessions(DEFAULT_CONTROLLER, [anna], OFFICER, T0, REQ) == 1
    # Still the subject's: found and exported, marked restricted, with its telemetry dropped.
    assert await find(store, "name", ANNA["name"]) == [anna]
    [record] = await store.export_sessions(DEFAULT_CONTROLLER, [anna], OFFICER, T0, REQ)
    assert record.restricted_at == T0 and record.ip == ANNA["ip"]
    assert (record.route, record.setup_ms, record.participants) == (None, None, None)
    # Out of processing: operators' reads leave it out, telemetry no longer lands on it.
    read = await store.read_sessions(OFFICER, T0, DEFAULT_CONTROLLER)
    assert [s.id for s in read] == [bram]
    await store.report_session(anna, "direct", 300)
    await store.note_participants([anna, bram], 3)
    await store.close_session(anna, T0 + HOUR, participants=3)
    await store.report_session(bram, "direct", 300)
    rows = dict((r[0], r[1:]) for r in await backend.raw.fetch(
        "SELECT id, route, setup_ms, participants, restricted_at IS NOT NULL FROM sessions"
    ))
    assert rows[anna] == (None, None, None, True)
    assert rows[bram] == ("direct", 300, 3, False)
    # Restricting again keeps the first time.
    await store.restrict_sessions(DEFAULT_CONTROLLER, [anna], OFFICER, T0 + DAY, REQ)
    [record] = await store.export_sessions(DEFAULT_CONTROLLER, [anna], OFFICER, T0, REQ)
    assert record.restricted_at == T0 and record.left_at == T0 + HOUR


@pytest.mark.parametrize(
    ("received", "deadline"),
    [
        (dt.datetime(2027, 1, 31, 9, 30, tzinfo=UTC), dt.datetime(2027, 2, 28, 9, 30, tzinfo=UTC)),
        (dt.datetime(2028, 1, 31, 9, 30, tzinfo=UTC), dt.datetime(2028, 2, 29, 9, 30, tzinfo=UTC)),
        (dt.datetime(2026, 11, 15, 16, 0, tzinfo=UTC), dt.datetime(2026, 12, 15, 16, 0, tzinfo=UTC)),
        (dt.datetime(2026, 12, 31, 23, 0, tzinfo=UTC), dt.datetime(2027, 1, 31, 23, 0, tzinfo=UTC)),
    ],
)
async def test_a_request_is_due_one_calendar_month_after_receipt(
    store: SqlStore, received: dt.datetime, deadline: dt.datetime
) -> None:
    request = await store.record_request(DEFAULT_CONTROLLER, "access", received, OFFICER, received)
    assert (request.received_at, request.deadline, request.completed_at) == (received, deadline, None)
    assert await store.get_request(request.id) == request
    assert not request.overdue(deadline)
    assert request.overdue(deadline + US)


async def test_requests_are_recorded_per_controller_and_completed_once(store: SqlStore) -> None:
    await store.ensure_controller(ACME, "Acme B.V.", T0)
    with pytest.raises(ValueError, match="a request is one of"):
        await store.record_request(DEFAULT_CONTROLLER, "forget-me", T0, OFFICER, T0)
    with pytest.raises(NotFound):
        await store.record_request("nobody", "access", T0, OFFICER, T0)
    mine = await store.record_request(DEFAULT_CONTROLLER, "erase", T0 - DAY, OFFICER, T0)
    theirs = await store.record_request(ACME, "export", T0, OFFICER, T0)
    assert mine.id != theirs.id
    assert await store.list_requests(DEFAULT_CONTROLLER) == [mine]
    assert await store.list_requests(ACME) == [theirs]
    assert await store.list_requests() == [mine, theirs]

    done = await store.complete_request(mine.id, [7, 3, 7], {"erased": 2, "found": 2}, OFFICER, T0 + HOUR)
    assert (done.completed_at, done.handled_by, done.session_ids, done.outcome) == (
        T0 + HOUR, OFFICER, (3, 7), {"erased": 2, "found": 2}
    )
    assert await store.get_request(mine.id) == done
    assert not done.overdue(T0 + 365 * DAY)
    with pytest.raises(Conflict):
        await store.complete_request(mine.id, [], {"erased": 0}, OFFICER, T0 + 2 * HOUR)
    assert await store.get_request(mine.id) == done
    with pytest.raises(NotFound):
        await store.complete_request("req-doesnotexist00", [], {}, OFFICER, T0)
    assert theirs.overdue(T0 + 31 * DAY) and not theirs.overdue(T0 + 30 * DAY)


async def test_every_subject_action_is_audited_and_the_log_holds_no_personal_values(
    store: SqlStore, backend: Backend
) -> None:
    anna, bram = await _anna_and_bram(store)
    head = await audit_head_seq(store)
    request = await store.record_request(DEFAULT_CONTROLLER, "erase", T0, OFFICER, T0)
    rid = request.id
    for kind in ("name", "phone", "email", "ip"):
        await store.find_subject(DEFAULT_CONTROLLER, kind, ANNA[kind], *EVER, OFFICER, T0, rid)
    await store.export_sessions(DEFAULT_CONTROLLER, [anna], OFFICER, T0, rid)
    await store.rectify_sessions(DEFAULT_CONTROLLER, [anna], {"email": "anna.nieuw@example.nl"}, OFFICER, T0, rid)
    await store.restrict_sessions(DEFAULT_CONTROLLER, [bram], "other-officer", T0, "req-fedcba9876543210")
    await store.erase_sessions(DEFAULT_CONTROLLER, [anna], OFFICER, T0, rid)
    await store.complete_request(rid, [anna], {"erased": 1}, OFFICER, T0)
    await store.read_sessions("support-1", T0, DEFAULT_CONTROLLER)
    assert await audit_since(store, head) == [
        (OFFICER, "subject.request", rid),
        (OFFICER, "subject.search", rid),
        (OFFICER, "subject.search", rid),
        (OFFICER, "subject.search", rid),
        (OFFICER, "subject.search", rid),
        (OFFICER, "subject.export", rid),
        (OFFICER, "subject.rectify", rid),
        ("other-officer", "subject.restrict", "req-fedcba9876543210"),
        (OFFICER, "subject.erase", rid),
        (OFFICER, "subject.complete", rid),
        ("support-1", "session.read", f"controller:{DEFAULT_CONTROLLER}"),
    ]
    text = (await raw_audit_text(backend.raw)).lower()
    assert [v for v in personal_strings(ANNA, BRAM, {"email": "anna.nieuw@example.nl"}) if v in text] == []
    assert audit.verify(await store.audit_entries()).ok


@pytest.mark.parametrize("object_id", ["192.0.2.7", "anna@example.nl", "2001:db8::5"])
async def test_a_personal_value_as_audit_object_is_refused_and_nothing_is_read(
    store: SqlStore, object_id: str
) -> None:
    await _anna_and_bram(store)
    before = await store.audit_entries()
    with pytest.raises(audit.AuditError) as refused:
        await store.find_subject(DEFAULT_CONTROLLER, "ip", "192.0.2.7", *EVER, OFFICER, T0, object_id)
    assert object_id not in str(refused.value)
    assert await store.audit_entries() == before


# --- controllers ----------------------------------------------------------------------------------------


async def _two_controllers(store: SqlStore) -> dict[str, dict[str, list[Any]]]:
    """Rooms, sessions and requests for the default controller and for Acme."""
    await store.ensure_controller(ACME, "Acme B.V.", T0 - 30 * DAY)
    made: dict[str, dict[str, list[Any]]] = {}
    for controller, people, tag in ((DEFAULT_CONTROLLER, (ANNA, BRAM), "dflt"), (ACME, (BRAM, ANNA), "acme")):
        rooms = [await make_room(store, f"room-{tag}-{i}-Gh47Jk91Lm", T0 - (5 - i) * DAY, T0 + DAY, controller)
                 for i in range(2)]
        sessions = [await join(store, room, person, T0 - HOUR) for room in rooms for person in people]
        requests = [await store.record_request(controller, kind, T0 - DAY, OFFICER, T0) for kind in ("access", "erase")]
        made[controller] = {"rooms": rooms, "sessions": sessions, "requests": requests}
    return made


async def test_controller_export_holds_everything_of_that_controller_and_nothing_of_another(
    store: SqlStore,
) -> None:
    made = await _two_controllers(store)
    head = await audit_head_seq(store)
    exported = await store.export_controller(ACME, OFFICER, T0)
    assert exported["controller"].id == ACME
    assert [r.id for r in exported["rooms"]] == made[ACME]["rooms"]
    assert all(r.controller_id == ACME for r in exported["rooms"])
    everything = {s.id: s for s in await store.list_sessions()}
    assert exported["sessions"] == [everything[i] for i in sorted(made[ACME]["sessions"])]
    assert {(s.ip, s.name, s.phone, s.email) for s in exported["sessions"]} == {
        (p["ip"], p["name"], p["phone"], p["email"]) for p in (ANNA, BRAM)
    }
    assert sorted(exported["requests"], key=by_id) == sorted(made[ACME]["requests"], key=by_id)
    text = repr(exported)
    for other in made[DEFAULT_CONTROLLER]["rooms"] + [r.id for r in made[DEFAULT_CONTROLLER]["requests"]]:
        assert other not in text
    assert not {s.id for s in exported["sessions"]} & set(made[DEFAULT_CONTROLLER]["sessions"])
    assert await audit_since(store, head) == [(OFFICER, "controller.export", f"controller:{ACME}")]


@pytest.mark.parametrize(
    "delete_after",
    [
        dt.datetime(2027, 2, 28, 9, 30, tzinfo=UTC) + US,  # a microsecond past one calendar month
        dt.datetime(2027, 3, 1, 9, 30, tzinfo=UTC),
        dt.datetime(2027, 1, 31, 9, 30, tzinfo=UTC) + 31 * DAY,
        dt.datetime(2027, 1, 31, 9, 30, tzinfo=UTC) - US,  # in the past
    ],
)
async def test_a_grace_period_past_one_calendar_month_or_in_the_past_is_refused(
    store: SqlStore, delete_after: dt.datetime
) -> None:
    now = dt.datetime(2027, 1, 31, 9, 30, tzinfo=UTC)
    await store.ensure_controller(ACME, "Acme B.V.", T0)
    head = await audit_head_seq(store)
    with pytest.raises(ValueError, match="grace period"):
        await store.start_offboarding(ACME, delete_after, OFFICER, now)
    controller = await store.get_controller(ACME)
    assert controller is not None and (controller.status, controller.delete_after) == ("active", None)
    assert await audit_since(store, head) == []


async def test_offboarding_stops_new_rooms_but_keeps_the_data_exportable(store: SqlStore) -> None:
    made = await _two_controllers(store)
    now = dt.datetime(2027, 1, 31, 9, 30, tzinfo=UTC)
    last_day = dt.datetime(2027, 2, 28, 9, 30, tzinfo=UTC)  # exactly one calendar month: allowed
    head = await audit_head_seq(store)
    controller = await store.start_offboarding(ACME, last_day, OFFICER, now)
    assert (controller.status, controller.offboarding_at, controller.delete_after) == ("offboarding", now, last_day)
    assert await store.get_controller(ACME) == controller
    with pytest.raises(Conflict):
        await store.create_room("room-acme-new-Yt40sQ2wEr", now, now + DAY, ACME)
    assert await store.get_room("room-acme-new-Yt40sQ2wEr") is None
    with pytest.raises(Conflict):
        await store.start_offboarding(ACME, last_day - DAY, OFFICER, now)
    await store.create_room("room-dflt-new-Yt40sQ2wEr", now, now + DAY)  # others go on
    exported = await store.export_controller(ACME, OFFICER, now)
    assert sorted(s.id for s in exported["sessions"]) == sorted(made[ACME]["sessions"])
    assert await audit_since(store, head) == [
        (OFFICER, "controller.offboard", f"controller:{ACME}"),
        (OFFICER, "controller.export", f"controller:{ACME}"),
    ]


async def _snapshot(backend: Backend, store: SqlStore, folder: Path) -> Path | list[tuple[Any, ...]]:
    """A backup taken before the purge: the SQLite file itself, or PostgreSQL's rows as stored."""
    if backend.kind == "sqlite":
        await store.compact()  # checkpoint: the file alone holds everything
        assert backend.raw.path is not None
        copy = folder / "backup.sqlite3"
        shutil.copyfile(backend.raw.path, copy)
        return copy
    return await backend.raw.fetch("SELECT controller_id, ip, name FROM sessions ORDER BY id")


async def test_purging_after_the_grace_period_deletes_that_controller_and_destroys_its_key(
    store: SqlStore, backend: Backend, tmp_path: Path
) -> None:
    made = await _two_controllers(store)
    theirs = {s.id for s in await store.list_sessions() if s.controller_id == ACME}
    assert theirs == set(made[ACME]["sessions"])
    ours_before = [s for s in await store.list_sessions() if s.controller_id == DEFAULT_CONTROLLER]
    key_file = backend.keys.folder / f"{ACME}.key"
    assert key_file.exists()
    backup = await _snapshot(backend, store, tmp_path)
    now = dt.datetime(2027, 1, 31, 9, 30, tzinfo=UTC)
    deadline = now + 7 * DAY
    await store.start_offboarding(ACME, deadline, OFFICER, now)

    assert await store.purge_controllers(deadline - US) == []
    assert {s.id for s in await store.list_sessions()} >= theirs
    assert key_file.exists()

    head = await audit_head_seq(store)
    assert await store.purge_controllers(deadline) == [ACME]
    for table in ("sessions", "rooms", "subject_requests"):
        assert await backend.raw.fetch(f"SELECT 1 FROM {table} WHERE controller_id = ?", ACME) == [], table
    controller = await store.get_controller(ACME)
    assert controller is not None and (controller.status, controller.deleted_at) == ("deleted", deadline)
    assert not key_file.exists()
    with pytest.raises(MissingKey):
        KeyStore(backend.keys.folder).get(ACME)
    with pytest.raises(MissingKey):
        store.keys.get(ACME)
    assert await audit_since(store, head) == [("job:offboarding", "controller.delete", f"controller:{ACME}")]

    # The backup still holds Acme's ciphertext, and nothing can read it any more.
    if isinstance(backup, Path):
        rows = [tuple(r) for r in sqlite3.connect(backup).execute("SELECT controller_id, ip, name FROM sessions")]
        restored = await SQLiteStore.open(backup, KeyStore(backend.keys.folder))
        try:
            with pytest.raises(MissingKey):
                await restored.list_sessions()
        finally:
            await restored.close()
    else:
        rows = backup
    acme_rows = [r for r in rows if r[0] == ACME]
    assert len(acme_rows) == len(theirs)
    default_key = KeyStore(backend.keys.folder).get(DEFAULT_CONTROLLER)
    for _, ip, _ in acme_rows:
        assert ANNA["ip"].encode() not in bytes(ip) and BRAM["ip"].encode() not in bytes(ip)
        with pytest.raises(CryptoError):
            default_key.decrypt("sessions", "ip", bytes(ip))

    # Everything of the other controller is as it was.
    assert [s for s in await store.list_sessions() if s.controller_id == DEFAULT_CONTROLLER] == ours_before
    assert all([await store.get_room(r) is not None for r in made[DEFAULT_CONTROLLER]["rooms"]])
    assert sorted(await store.list_requests(DEFAULT_CONTROLLER), key=by_id) == sorted(
        made[DEFAULT_CONTROLLER]["requests"], key=by_id
    )
    assert (await store.get_controller(DEFAULT_CONTROLLER)).status == "active"  # type: ignore[union-attr]
    assert (backend.keys.folder / f"{DEFAULT_CONTROLLER}.key").exists()

    # A deleted controller stays deleted.
    assert await store.purge_controllers(deadline + DAY) == []
    with pytest.raises(Conflict):
        await store.export_controller(ACME, OFFICER, deadline)
    with pytest.raises(Conflict):
        await store.create_room("room-acme-new-Yt40sQ2wEr", deadline, deadline + DAY, ACME)
    with pytest.raises(NotFound):
        await find(store, "name", ANNA["name"], controller=ACME)


async def test_a_key_left_behind_by_an_interrupted_purge_is_destroyed_by_the_next(
    store: SqlStore, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _two_controllers(store)
    now = dt.datetime(2027, 1, 31, 9, 30, tzinfo=UTC)
    await store.start_offboarding(ACME, now + DAY, OFFICER, now)
    real_destroy = store.keys.destroy

    def crash(controller_id: str) -> bool:
        raise OSError("power lost while destroying the key")

    monkeypatch.setattr(store.keys, "destroy", crash)
    with pytest.raises(OSError, match="power lost"):
        await store.purge_controllers(now + DAY)
    controller = await store.get_controller(ACME)
    assert controller is not None and controller.status == "deleted"  # the rows went; the key did not
    assert (backend.keys.folder / f"{ACME}.key").exists()

    monkeypatch.setattr(store.keys, "destroy", real_destroy)
    await store.purge_controllers(now + 2 * DAY)
    assert not (backend.keys.folder / f"{ACME}.key").exists()
    assert (backend.keys.folder / f"{DEFAULT_CONTROLLER}.key").exists()


# --- audit log ------------------------------------------------------------------------------------------


async def _some_audited_work(store: SqlStore) -> None:
    anna, bram = await _anna_and_bram(store)
    request = await store.record_request(DEFAULT_CONTROLLER, "access", T0, OFFICER, T0)
    await store.find_subject(DEFAULT_CONTROLLER, "name", ANNA["name"], *EVER, OFFICER, T0 + MINUTE, request.id)
    await store.export_sessions(DEFAULT_CONTROLLER, [anna], OFFICER, T0 + 2 * MINUTE, request.id)
    await store.read_sessions("support-1", T0 + 3 * MINUTE, DEFAULT_CONTROLLER)
    await store.restrict_sessions(DEFAULT_CONTROLLER, [bram], OFFICER, T0 + 4 * MINUTE, request.id)
    await store.complete_request(request.id, [anna], {"exported": 1}, OFFICER, T0 + 5 * MINUTE)


async def test_the_store_audit_log_is_one_intact_chain(store: SqlStore) -> None:
    await _some_audited_work(store)
    entries = await store.audit_entries()
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1)) and len(entries) == 6
    assert entries[0].prev_hash == audit.GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    result = audit.verify(entries, expected_head=entries[-1].hash, expected_count=len(entries))
    assert result.ok and result.entries_checked == 6, result.detail
    assert audit.verify(await store.audit_entries_stored_order()).ok
    assert await store.audit_entries(after_seq=4) == entries[4:]
    assert await store.audit_entries(after_seq=1, limit=2) == entries[1:3]
    assert [e.at for e in entries] == [T0, T0 + MINUTE, T0 + 2 * MINUTE, T0 + 3 * MINUTE, T0 + 4 * MINUTE,
                                       T0 + 5 * MINUTE]


APPEND_ONLY_REFUSAL = (sqlite3.DatabaseError, asyncpg.PostgresError)


async def test_the_database_refuses_to_change_or_delete_audit_entries(store: SqlStore, backend: Backend) -> None:
    await _some_audited_work(store)
    before = await store.audit_entries()
    attacks = [
        "UPDATE audit_log SET actor = 'nobody' WHERE seq = 2",
        "UPDATE audit_log SET seq = seq + 100",
        "DELETE FROM audit_log WHERE seq = 6",
        "DELETE FROM audit_log",
    ]
    if backend.kind == "postgres":
        attacks.append("TRUNCATE audit_log")
    for attack in attacks:
        with pytest.raises(APPEND_ONLY_REFUSAL, match="append-only"):
            await backend.raw.execute(attack)
    assert await store.audit_entries() == before


def _drop_audit_triggers(kind: str) -> list[str]:
    if kind == "sqlite":
        return ["DROP TRIGGER audit_log_append_only_update", "DROP TRIGGER audit_log_append_only_delete"]
    return ["DROP TRIGGER audit_log_append_only ON audit_log", "DROP TRIGGER audit_log_no_truncate ON audit_log"]


def _rewritten_from(entries: Sequence[audit.AuditEntry], dropped_seq: int) -> list[str | tuple[str, Sequence[Any]]]:
    """What an attacker who knows the algorithm does: drop one entry and recompute every later hash."""
    kept = [e for e in entries if e.seq != dropped_seq]
    head = entries[dropped_seq - 2]
    statements: list[str | tuple[str, Sequence[Any]]] = [("DELETE FROM audit_log WHERE seq >= ?", [dropped_seq])]
    for entry in kept[dropped_seq - 1:]:
        head = audit.append(head, entry.actor, entry.action, entry.object_id, entry.at)
        statements.append((
            "INSERT INTO audit_log (seq, at, actor, action, object_id, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [head.seq, head.at, head.actor, head.action, head.object_id, head.prev_hash, head.hash],
        ))
    return statements


@pytest.mark.parametrize(
    ("tamper", "problem", "first_bad"),
    [
        ("edited", audit.Problem.EDITED, 3),
        ("edited-time", audit.Problem.EDITED, 2),
        ("deleted", audit.Problem.DELETED, 3),
        ("reordered", audit.Problem.EDITED, 3),  # the hash covers seq: swapped numbers no longer match
        ("truncated", audit.Problem.TRUNCATED, 5),
        ("emptied", audit.Problem.TRUNCATED, 1),
        ("rewritten", audit.Problem.TRUNCATED, 6),
    ],
)
async def test_tampering_with_the_audit_log_past_the_triggers_is_detected(
    store: SqlStore, backend: Backend, tamper: str, problem: audit.Problem, first_bad: int
) -> None:
    await _some_audited_work(store)
    entries = await store.audit_entries()
    exported_head, exported_count = entries[-1].hash, len(entries)  # kept elsewhere, e.g. sent to the controller
    assert audit.verify(entries, exported_head, exported_count).ok
    later = dt.datetime(2026, 11, 1, 12, 0, 7, tzinfo=UTC)
    statements: dict[str, list[str | tuple[str, Sequence[Any]]]] = {
        "edited": ["UPDATE audit_log SET actor = 'someone-else' WHERE seq = 3"],
        "edited-time": [("UPDATE audit_log SET at = ? WHERE seq = 2", [later])],
        "deleted": ["DELETE FROM audit_log WHERE seq = 3"],
        "reordered": [
            "UPDATE audit_log SET seq = -1 WHERE seq = 3",
            "UPDATE audit_log SET seq = 3 WHERE seq = 4",
            "UPDATE audit_log SET seq = 4 WHERE seq = -1",
        ],
        "truncated": ["DELETE FROM audit_log WHERE seq >= 5"],
        "emptied": ["TRUNCATE audit_log" if backend.kind == "postgres" else "DELETE FROM audit_log"],
        "rewritten": _rewritten_from(entries, 3),
    }
    await backend.raw.execute(*_drop_audit_triggers(backend.kind), *statements[tamper])

    tampered = await store.audit_entries()
    assert tampered != entries
    result = audit.verify(tampered, exported_head, exported_count)
    assert (result.ok, result.problem, result.first_bad_seq) == (False, problem, first_bad), result.detail
    if tamper in ("truncated", "emptied", "rewritten"):
        # A shortened or recomputed chain is a valid chain: only the exported head shows what happened.
        assert audit.verify(tampered).ok
        assert not audit.verify(tampered, expected_head=exported_head).ok


# --- operators and breaches -----------------------------------------------------------------------------


async def test_operators_round_trip_with_the_totp_secret_encrypted_at_rest(
    store: SqlStore, backend: Backend
) -> None:
    secret = secrets.token_bytes(20)
    alice = OperatorRecord(
        username="alice", role="privacy-officer", password_hash="scrypt$16384$8$1$c2FsdA$aGFzaA",
        totp_secret=secret, created_at=T0 - DAY,
    )
    bob = OperatorRecord(
        username="bob", role="viewer", password_hash="scrypt$16384$8$1$c2FsdB$aGFzaB",
        totp_secret=secrets.token_bytes(20), created_at=T0,
    )
    head = await audit_head_seq(store)
    await store.add_operator(bob, "admin-1", T0)
    await store.add_operator(alice, "admin-1", T0)
    assert await store.get_operator("alice") == alice
    assert await store.list_operators() == [alice, bob]
    assert await store.get_operator("carol") is None
    with pytest.raises(Conflict):
        await store.add_operator(alice, "admin-1", T0)

    [[blob]] = await backend.raw.fetch("SELECT totp_secret FROM operators WHERE username = ?", "alice")
    blob = bytes(blob)
    for form in (secret, secret.hex().encode(), base64.b32encode(secret), base64.b32encode(secret).rstrip(b"=")):
        assert form not in blob
    assert store.keys.get(SERVICE_KEY_ID).decrypt("operators", "totp_secret", blob) == secret.hex()

    new_secret = secrets.token_bytes(20)
    await store.update_operator("alice", "admin-1", T0 + HOUR, role="admin", password_hash="scrypt$new",
                                totp_secret=new_secret, disabled=True)
    changed = await store.get_operator("alice")
    assert changed is not None
    assert (changed.role, changed.password_hash, changed.totp_secret, changed.disabled_at, changed.created_at) == (
        "admin", "scrypt$new", new_secret, T0 + HOUR, T0 - DAY
    )
    [[blob]] = await backend.raw.fetch("SELECT totp_secret FROM operators WHERE username = ?", "alice")
    assert new_secret not in bytes(blob) and new_secret.hex().encode() not in bytes(blob)
    await store.update_operator("alice", "admin-1", T0 + 2 * HOUR, disabled=False)
    enabled = await store.get_operator("alice")
    assert enabled is not None and enabled.disabled_at is None and enabled.role == "admin"
    await store.update_operator("alice", "admin-1", T0 + 3 * HOUR)  # nothing to change: nothing written
    with pytest.raises(NotFound):
        await store.update_operator("carol", "admin-1", T0, role="viewer")
    assert await store.get_operator("bob") == bob
    assert await audit_since(store, head) == [
        ("admin-1", "operator.change", "operator:bob"),
        ("admin-1", "operator.change", "operator:alice"),
        ("admin-1", "operator.change", "operator:alice"),
        ("admin-1", "operator.change", "operator:alice"),
    ]


async def test_breaches_are_inserted_then_updated_and_listed_by_discovery(store: SqlStore) -> None:
    head = await audit_head_seq(store)
    first = {"nature": "confidentiality", "subjects_approx": 12, "records_approx": 40}
    await store.save_breach("brk-2026-002", T0 - 2 * HOUR, first, "admin-1", T0)
    saved = await store.get_breach("brk-2026-002")
    assert saved is not None
    assert (saved.id, saved.discovered_at, saved.document, saved.updated_at) == (
        "brk-2026-002", T0 - 2 * HOUR, first, T0
    )
    second = {**first, "measures": "keys rotated", "subjects_approx": 15}
    await store.save_breach("brk-2026-002", T0 - 2 * HOUR, second, "admin-1", T0 + HOUR)
    updated = await store.get_breach("brk-2026-002")
    assert updated is not None
    assert (updated.document, updated.updated_at, updated.discovered_at) == (second, T0 + HOUR, T0 - 2 * HOUR)
    await store.save_breach("brk-2026-001", T0 - 3 * DAY, {"nature": "availability"}, "admin-2", T0 + 2 * HOUR)
    assert [(b.id, b.document) for b in await store.list_breaches()] == [
        ("brk-2026-001", {"nature": "availability"}), ("brk-2026-002", second)
    ]
    assert await store.get_breach("brk-2026-999") is None
    assert await audit_since(store, head) == [
        ("admin-1", "breach.write", "breach:brk-2026-002"),
        ("admin-1", "breach.write", "breach:brk-2026-002"),
        ("admin-2", "breach.write", "breach:brk-2026-001"),
    ]


# --- migration v1 -> v2 ---------------------------------------------------------------------------------

V1_ROOM = "room-v1-Mb28xN5cZq7W"
V1_PEOPLE = [("203.0.113.77", "Vincent Plaintextname"), ("2001:db8::7a", None)]


async def _build_v1_database(backend: Backend) -> list[int]:
    """A database as the v1 store left it: migration 1 only, a room and two plaintext sessions."""
    raw = backend.raw
    migrations = SQLITE_MIGRATIONS if backend.kind == "sqlite" else POSTGRES_MIGRATIONS
    version, steps = migrations[0]
    assert version == 1 and all(isinstance(s, str) for s in steps)
    statements: list[str | tuple[str, Sequence[Any]]] = [str(s) for s in steps]
    if backend.kind == "sqlite":
        assert raw.path is not None
        raw.path.parent.mkdir(parents=True, exist_ok=True)
        statements = ["PRAGMA journal_mode=WAL", *statements, "PRAGMA user_version = 1"]
    else:
        statements += [
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)",
            "INSERT INTO schema_migrations (version, applied_at) VALUES (1, now())",
        ]
    statements.append(("INSERT INTO rooms (id, created_at, expires_at) VALUES (?, ?, ?)",
                       [V1_ROOM, T0 - 2 * DAY, T0 + 5 * DAY]))
    for i, (ip, name) in enumerate(V1_PEOPLE):
        statements.append(("INSERT INTO sessions (room_id, ip, name, joined_at, left_at) VALUES (?, ?, ?, ?, ?)",
                           [V1_ROOM, ip, name, T0 - DAY + i * HOUR, T0 - DAY + i * HOUR + 20 * MINUTE]))
    await raw.execute(*statements)
    ids = [r[0] for r in await raw.fetch("SELECT id FROM sessions ORDER BY id")]
    assert len(ids) == 2
    return ids


async def test_a_v1_database_with_data_is_migrated_to_encrypted_rows(backend: Backend) -> None:
    v1_ids = await _build_v1_database(backend)
    store = await backend.open_store()
    try:
        sessions = await store.list_sessions()
        assert [(s.id, s.controller_id, s.room_id, s.ip, s.name, s.joined_at, s.left_at) for s in sessions] == [
            (v1_ids[i], DEFAULT_CONTROLLER, V1_ROOM, ip, name, T0 - DAY + i * HOUR, T0 - DAY + i * HOUR + 20 * MINUTE)
            for i, (ip, name) in enumerate(V1_PEOPLE)
        ]
        room = await store.get_room(V1_ROOM)
        assert room is not None and (room.controller_id, room.expires_at) == (DEFAULT_CONTROLLER, T0 + 5 * DAY)
        controller = await store.get_controller(DEFAULT_CONTROLLER)
        assert controller is not None and controller.status == "active"
        assert await backend.applied_versions() == [v for v, _ in SQLITE_MIGRATIONS]
        # Blind indexes were built too: the old rows can be found for a subject request.
        assert await find(store, "name", "vincent plaintextname") == [v1_ids[0]]
        assert await find(store, "ip", "2001:DB8::7A") == [v1_ids[1]]
        # At rest only ciphertext is left; the old tables are gone.
        raw_rows = await backend.raw.fetch("SELECT * FROM sessions")
        raw_text = b"".join(bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode()
                            for row in raw_rows for v in row)
        for ip, name in V1_PEOPLE:
            assert ip.encode() not in raw_text
            assert name is None or name.encode() not in raw_text
        assert set(await backend.live_tables()) == set(TABLES)  # the old v1 tables are gone
        new = await store.open_session(V1_ROOM, "192.0.2.200", None, T0)
        assert new > max(v1_ids)
        if backend.kind == "sqlite":  # opening alone leaves no plaintext page in the file or its WAL
            on_disk = backend.raw.file_bytes()
            for ip, name in V1_PEOPLE:
                assert ip.encode() not in on_disk
                assert name is None or name.encode() not in on_disk
    finally:
        await store.close()


# --- keys -----------------------------------------------------------------------------------------------


async def test_the_key_folder_and_key_files_are_the_owners_alone(backend: Backend) -> None:
    backend.keys.folder.mkdir(mode=0o755)
    os.chmod(backend.keys.folder, 0o755)  # as a careless hand might have left it
    previous_umask = os.umask(0)  # nothing may depend on a strict umask
    try:
        store = await backend.open_store()
        try:
            await store.ensure_controller(DEFAULT_CONTROLLER, "Default", T0)
            await store.ensure_controller(ACME, "Acme B.V.", T0)
            await store.add_operator(
                OperatorRecord("alice", "admin", "scrypt$x", secrets.token_bytes(20), T0), "admin-1", T0
            )
        finally:
            await store.close()
    finally:
        os.umask(previous_umask)
    assert stat.S_IMODE(backend.keys.folder.stat().st_mode) == 0o700
    files = sorted(p.name for p in backend.keys.folder.iterdir())
    assert files == sorted([f"{ACME}.key", f"{DEFAULT_CONTROLLER}.key", f"{SERVICE_KEY_ID}.key"])
    for path in backend.keys.folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    if backend.raw.path is not None:
        assert stat.S_IMODE(backend.raw.path.stat().st_mode) == 0o600
