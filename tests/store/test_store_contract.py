"""The SqlStore contract: every backend (SQLite, PostgreSQL) passes this same suite."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from metadata_store import TABLES
from metadata_store import postgres as postgres_backend
from metadata_store import sqlite as sqlite_backend
from metadata_store.crypto import KeyStore
from metadata_store.postgres import PostgresStore
from metadata_store.sql import SqlStore
from metadata_store.store import DEFAULT_CONTROLLER, NotFound
from tests.store.conftest import ADMIN_DSN, Backend

T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
KEYS = KeyStore(Path("/nonexistent/kijkmee-keys"))  # never touched: the connection is refused first
ROOM = "r" * 22
OTHER_ROOM = "q" * 22

# How each backend stores the declaration's portable types (metadata_store.schema.Column.sql_type).
LIVE_TYPES = {
    "sqlite": {"TEXT": "TEXT", "INTEGER": "INTEGER", "TIMESTAMP": "TEXT", "BLOB": "BLOB"},
    "postgres": {"TEXT": "text", "INTEGER": "bigint", "TIMESTAMP": "timestamp with time zone", "BLOB": "bytea"},
}

# What each backend's driver raises when the database refuses a duplicate room id: the contract is
# "refused, and nothing changed".
DUPLICATE = (sqlite3.IntegrityError, asyncpg.UniqueViolationError)


def _is_utc(value: dt.datetime | None) -> bool:
    return value is not None and value.utcoffset() == dt.timedelta(0)


# Rooms


async def test_a_room_round_trips(store: SqlStore) -> None:
    await store.create_room(ROOM, T0, T0 + dt.timedelta(hours=24))
    room = await store.get_room(ROOM)
    assert room is not None
    assert (room.id, room.created_at, room.expires_at) == (ROOM, T0, T0 + dt.timedelta(hours=24))
    assert await store.get_room(OTHER_ROOM) is None


async def test_a_room_id_is_taken_once(store: SqlStore) -> None:
    await store.create_room(ROOM, T0, T0 + dt.timedelta(hours=24))
    with pytest.raises(DUPLICATE):
        await store.create_room(ROOM, T0 + dt.timedelta(minutes=1), T0 + dt.timedelta(hours=48))
    room = await store.get_room(ROOM)
    assert room is not None and (room.created_at, room.expires_at) == (T0, T0 + dt.timedelta(hours=24))


async def test_extending_a_room_moves_its_expiry_later_never_earlier(store: SqlStore) -> None:
    await store.create_room(ROOM, T0, T0 + dt.timedelta(hours=24))
    steps = [
        (T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=24)),  # earlier: kept
        (T0 + dt.timedelta(hours=24), T0 + dt.timedelta(hours=24)),  # the same: kept
        (T0 + dt.timedelta(hours=30, microseconds=1), T0 + dt.timedelta(hours=30, microseconds=1)),  # later: moved
        (T0 + dt.timedelta(hours=30), T0 + dt.timedelta(hours=30, microseconds=1)),  # a microsecond earlier: kept
    ]
    for asked, expected in steps:
        await store.extend_room(ROOM, asked)
        room = await store.get_room(ROOM)
        assert room is not None and room.expires_at == expected, asked
        assert room.created_at == T0


async def test_extending_an_unknown_room_changes_nothing(store: SqlStore) -> None:
    await store.extend_room(OTHER_ROOM, T0 + dt.timedelta(hours=1))
    assert await store.get_room(OTHER_ROOM) is None


# Sessions


async def test_sessions_open_close_and_list_in_the_order_opened(store: SqlStore) -> None:
    await store.create_room(ROOM, T0, T0 + dt.timedelta(hours=24))
    await store.create_room(OTHER_ROOM, T0, T0 + dt.timedelta(hours=24))
    # Joined times run backwards on purpose: the list follows the order sessions were opened.
    first = await store.open_session(ROOM, "192.0.2.7", None, T0 + dt.timedelta(minutes=3))
    second = await store.open_session(OTHER_ROOM, "2001:db8::1", "Anna", T0 + dt.timedelta(minutes=2))
    third = await store.open_session(ROOM, "198.51.100.1", "Bram", T0 + dt.timedelta(minutes=1))
    assert first < second < third
    await store.close_session(second, T0 + dt.timedelta(minutes=5))
    rows = await store.list_sessions()
    assert [(r.id, r.room_id, r.ip, r.name, r.joined_at, r.left_at) for r in rows] == [
        (first, ROOM, "192.0.2.7", None, T0 + dt.timedelta(minutes=3), None),
        (second, OTHER_ROOM, "2001:db8::1", "Anna", T0 + dt.timedelta(minutes=2), T0 + dt.timedelta(minutes=5)),
        (third, ROOM, "198.51.100.1", "Bram", T0 + dt.timedelta(minutes=1), None),
    ]


async def test_closing_a_session_twice_keeps_the_first_time(store: SqlStore) -> None:
    await store.create_room(ROOM, T0, T0 + dt.timedelta(hours=24))
    session = await store.open_session(ROOM, "192.0.2.7", None, T0)
    await store.close_session(session, T0 + dt.timedelta(minutes=5))
    await store.close_session(session, T0 + dt.timedelta(minutes=9))
    await store.close_session(session, T0 + dt.timedelta(minutes=1))
    [row] = await store.list_sessions()
    assert row.left_at == T0 + dt.timedelta(minutes=5)


async def test_closing_an_unknown_session_changes_nothing(store: SqlStore) -> None:
    await store.create_room(ROOM, T0, T0 + dt.timedelta(hours=24))
    session = await store.open_session(ROOM, "192.0.2.7", None, T0)
    await store.close_session(session + 1000, T0 + dt.timedelta(minutes=5))
    [row] = await store.list_sessions()
    assert row.left_at is None


async def test_a_join_counts_the_people_together_on_its_session_and_on_the_others(store: SqlStore) -> None:
    await store.create_room(ROOM, T0, T0 + dt.timedelta(hours=24))
    anna = await store.open_session(ROOM, "192.0.2.7", "Anna", T0, together=[])
    bram = await store.open_session(ROOM, "192.0.2.8", None, T0, together=[anna])
    cor = await store.open_session(ROOM, "192.0.2.9", None, T0, together=[anna, bram])
    dirk = await store.open_session(ROOM, "192.0.2.10", None, T0, together=[cor])  # later, two together
    # Someone joining at the same moment, whose own row is not written yet, counts without a session id.
    eva = await store.open_session(ROOM, "192.0.2.12", None, T0, together=[dirk], present=3)
    unknown = await store.open_session(ROOM, "192.0.2.11", None, T0)  # not through a join: no count
    counts = {r.id: r.participants for r in await store.list_sessions()}
    assert counts == {anna: 3, bram: 3, cor: 3, dirk: 3, eva: 3, unknown: None}  # a count never goes down


async def test_a_session_needs_an_existing_room(store: SqlStore) -> None:
    with pytest.raises(NotFound, match="no such room"):
        await store.open_session(OTHER_ROOM, "192.0.2.7", None, T0)
    assert await store.list_sessions() == []


async def test_names_are_kept_exactly_and_none_means_none_typed(store: SqlStore) -> None:
    await store.create_room(ROOM, T0, T0 + dt.timedelta(hours=24))
    names = [None, "Anna", "", " Anna ", "Ánna Ødegård 李 👋", "O'Brien\"; DROP TABLE sessions; --", "a" * 64]
    ids = [await store.open_session(ROOM, "192.0.2.7", name, T0) for name in names]
    rows = await store.list_sessions()
    assert [(r.id, r.name) for r in rows] == list(zip(ids, names, strict=True))
    assert rows[0].name is None and rows[2].name == ""


async def test_ip_addresses_round_trip_as_the_text_given(store: SqlStore) -> None:
    await store.create_room(ROOM, T0, T0 + dt.timedelta(hours=24))
    addresses = [
        "192.0.2.7",
        "0.0.0.0",
        "255.255.255.255",
        "2001:db8::1",
        "2001:0db8:0000:0000:0000:0000:0000:0001",  # not normalised: stored as given
        "::1",
        "::ffff:192.0.2.7",
        "fe80::1%eth0",
        "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
    ]
    for address in addresses:
        await store.open_session(ROOM, address, None, T0)
    assert [r.ip for r in await store.list_sessions()] == addresses


# Time


async def test_timestamps_round_trip_as_utc_to_the_microsecond(store: SqlStore) -> None:
    created = dt.datetime(2026, 11, 1, 12, 0, 0, 123457, tzinfo=dt.UTC)
    expires = dt.datetime(2099, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)
    amsterdam_summer = dt.timezone(dt.timedelta(hours=2))
    joined = dt.datetime(2026, 7, 1, 14, 30, 0, 1, tzinfo=amsterdam_summer)  # 12:30:00.000001Z
    left = dt.datetime(2026, 7, 1, 12, 30, 0, 999999, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30)))
    await store.create_room(ROOM, created, expires)
    session = await store.open_session(ROOM, "192.0.2.7", None, joined)
    await store.close_session(session, left)

    room = await store.get_room(ROOM)
    [row] = await store.list_sessions()
    assert room is not None
    got = [room.created_at, room.expires_at, row.joined_at, row.left_at]
    assert got == [created, expires, joined, left]  # the same instants
    assert all(_is_utc(value) for value in got), got  # handed back in UTC
    assert [v.microsecond for v in got if v is not None] == [123457, 999999, 1, 999999]
    assert row.joined_at == dt.datetime(2026, 7, 1, 12, 30, 0, 1, tzinfo=dt.UTC)


async def test_naive_times_are_refused(store: SqlStore) -> None:
    naive = dt.datetime(2026, 11, 1, 12, 0)
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.create_room(ROOM, naive, T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.create_room(ROOM, T0, naive)
    assert await store.get_room(ROOM) is None
    await store.create_room(ROOM, T0, T0 + dt.timedelta(hours=1))
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.extend_room(ROOM, naive + dt.timedelta(hours=2))
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.open_session(ROOM, "192.0.2.7", None, naive)
    session = await store.open_session(ROOM, "192.0.2.7", None, T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.close_session(session, naive)
    [row] = await store.list_sessions()
    assert row.left_at is None


# Concurrency


async def test_concurrent_sessions_get_distinct_ids_and_all_rows_are_kept(store: SqlStore) -> None:
    await store.create_room(ROOM, T0, T0 + dt.timedelta(hours=24))
    count = 50
    ids = await asyncio.gather(
        *(store.open_session(ROOM, f"192.0.2.{i}", f"p{i}", T0 + dt.timedelta(seconds=i)) for i in range(count))
    )
    assert len(set(ids)) == count
    rows = await store.list_sessions()
    assert {r.id for r in rows} == set(ids)
    by_id = {r.id: r for r in rows}
    for i, session in enumerate(ids):  # each id belongs to the row that call wrote
        assert (by_id[session].ip, by_id[session].name) == (f"192.0.2.{i}", f"p{i}")
    await asyncio.gather(*(store.close_session(s, T0 + dt.timedelta(hours=1)) for s in ids))
    assert all(r.left_at == T0 + dt.timedelta(hours=1) for r in await store.list_sessions())


# Schema and migrations


async def test_the_live_schema_equals_the_declaration(backend: Backend) -> None:
    opened = await backend.open_store()
    await opened.close()
    types = LIVE_TYPES[backend.kind]
    declared = {table: [(c.name, types[c.sql_type], c.nullable) for c in columns] for table, columns in TABLES.items()}
    assert await backend.live_tables() == declared  # same tables, same columns in order, types, nullability


async def test_both_backends_number_their_migrations_alike() -> None:
    assert [v for v, _ in postgres_backend.MIGRATIONS] == [v for v, _ in sqlite_backend.MIGRATIONS]


async def test_opening_again_migrates_nothing_and_keeps_the_data(backend: Backend) -> None:
    latest = [v for v, _ in postgres_backend.MIGRATIONS]
    first = await backend.open_store()
    try:
        await first.ensure_controller(DEFAULT_CONTROLLER, "Default", T0)
        await first.create_room(ROOM, T0, T0 + dt.timedelta(hours=24))
        second = await backend.open_store()  # while the first is still open
        try:
            assert await second.get_room(ROOM) is not None
        finally:
            await second.close()
    finally:
        await first.close()
    third = await backend.open_store()
    try:
        room = await third.get_room(ROOM)
        assert room is not None and room.expires_at == T0 + dt.timedelta(hours=24)
    finally:
        await third.close()
    assert await backend.applied_versions() == latest


async def test_two_nodes_opening_a_fresh_database_at_once_both_start(backend: Backend) -> None:
    results = await asyncio.gather(*(backend.open_store() for _ in range(4)), return_exceptions=True)
    stores = [r for r in results if not isinstance(r, BaseException)]
    try:
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        await stores[0].ensure_controller(DEFAULT_CONTROLLER, "Default", T0)
        await stores[0].create_room(ROOM, T0, T0 + dt.timedelta(hours=24))
        assert all([await s.get_room(ROOM) is not None for s in stores])
    finally:
        for opened in stores:
            await opened.close()
    assert await backend.applied_versions() == [v for v, _ in postgres_backend.MIGRATIONS]


# PostgreSQL only: TLS settings reach the connection


async def _server_offers_tls() -> bool:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        return bool(await admin.fetchval("SHOW ssl") == "on")
    finally:
        await admin.close()


@pytest.mark.parametrize("how", ["ssl argument", "sslmode in the DSN"])
async def test_postgres_requiring_tls_refuses_a_server_without_it(postgres_dsn: str, how: str) -> None:
    if await _server_offers_tls():
        pytest.skip("this PostgreSQL offers TLS; the refusal needs one that does not (as on CI)")
    with pytest.raises(ConnectionError, match="rejected SSL upgrade"):
        if how == "ssl argument":
            await PostgresStore.open(postgres_dsn, KEYS, ssl="require")
        else:
            await PostgresStore.open(postgres_dsn + "?sslmode=require", KEYS)


async def test_postgres_ssl_argument_wins_over_the_dsn(postgres_dsn: str, tmp_path: Path) -> None:
    if await _server_offers_tls():
        pytest.skip("this PostgreSQL offers TLS; the refusal needs one that does not (as on CI)")
    opened = await PostgresStore.open(postgres_dsn + "?sslmode=require", KeyStore(tmp_path), ssl="disable")
    await opened.close()
