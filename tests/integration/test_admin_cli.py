"""`kijkmee admin` as the processor's operators and a controller's privacy officer use it.

Every check runs the installed `kijkmee` command in a subprocess against a data folder in tmp_path,
seeded through the store itself (`open_store`, `create_room`, `open_session`), and then looks at what
the command printed, wrote and left in the store.

Operator accounts cost a deliberately slow scrypt hash each, so they are made once per module (through
the CLI, starting with the bootstrap of the first admin) in a template folder that each test copies.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import datetime as dt
import json
import os
import re
import secrets
import shutil
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import pytest

from kijkmee.cli import build_parser, main
from kijkmee.config import ServeConfig
from kijkmee.storage import open_store
from metadata_store import breaches
from metadata_store.crypto import NORMALISERS, default_key_folder
from metadata_store.exports import CONTROLLER_EXPORT_SCHEMA, REQUEST_REPORT_SCHEMA, SCHEMAS, SUBJECT_EXPORT_SCHEMA
from metadata_store.register import validate_register
from metadata_store.sql import SqlStore

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
SCHEMA_DIR = REPO / "docs" / "schemas"

# The console script pip installed next to this interpreter (what an operator runs); `python -m kijkmee`
# only when the tests run from an interpreter without it.
_SCRIPT = Path(sys.executable).with_name("kijkmee")
KIJKMEE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "kijkmee"]
# Nothing of the caller's own kijkmee setup may leak in (KIJKMEE_DATA_DIR, KIJKMEE_OPERATOR, ...).
ENV = {k: v for k, v in os.environ.items() if not k.startswith("KIJKMEE_")}

PASSWORDS = {
    "ada": "lantern harbour gravel 2031",
    "pim": "quiet orchard telescope 77",
    "aud": "marble fox under winter 19",
    "olga": "copper kettle sings at dawn",
}
ROLES = {"ada": "admin", "pim": "privacy_officer", "aud": "auditor", "olga": "privacy_officer"}


# --- running the command ------------------------------------------------------------------------------


Result = subprocess.CompletedProcess[str]


def kijkmee(*args: str, cwd: Path, stdin: str = "", env: dict[str, str] | None = None) -> Result:
    return subprocess.run(
        [*KIJKMEE, *args], input=stdin, capture_output=True, text=True, cwd=cwd, env=env or ENV, timeout=120,
        check=False,
    )


def admin(data_dir: Path, actor: str | None, *args: str, stdin: str = "",
          env: dict[str, str] | None = None) -> Result:
    """`kijkmee admin --data-dir DATA [--as ACTOR] ARGS...`, run in the data folder's parent."""
    who = ["--as", actor] if actor is not None else []
    return kijkmee("admin", "--data-dir", str(data_dir), *who, *args, cwd=data_dir.parent, stdin=stdin, env=env)


def admin_all(data_dir: Path, calls: Sequence[tuple[str | None, Sequence[str]]]) -> list[Result]:
    """Independent commands at once (SQLite serialises their transactions), to keep the module fast."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(lambda call: admin(data_dir, call[0], *call[1]), calls))


def ok(result: Result) -> Result:
    assert result.returncode == 0, f"{result.args}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


def refused(result: Result, *words: str) -> str:
    """Exit 1 with one plain line on stderr (no traceback) holding `words`; nothing on stdout."""
    assert result.returncode == 1, f"{result.args}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kijkmee admin: "), result.stderr
    assert "Traceback" not in result.stderr and "Error(" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert result.stdout == "", result.stdout
    return lines[0]


# --- the store, in-process -------------------------------------------------------------------------


def with_store(data_dir: Path, work: Callable[[SqlStore], Awaitable[T]]) -> T:
    async def run() -> T:
        store = await open_store(ServeConfig(data_dir=data_dir))
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


@dataclass(frozen=True)
class Person:
    ip: str
    name: str | None
    phone: str | None = None
    email: str | None = None
    ago: dt.timedelta = dt.timedelta(hours=2)

    def values(self) -> list[str]:
        """Every personal value as typed and as the blind index normalises it."""
        out = []
        for kind in ("ip", "name", "phone", "email"):
            value = getattr(self, kind)
            if value is not None:
                out += [value, NORMALISERS[kind](value)]
        return out


ANNA_1 = Person("192.0.2.10", "Anna de Vries", phone="06-12345678", email="anna@example.nl", ago=dt.timedelta(days=3))
ANNA_2 = Person("198.51.100.7", "  ANNA   de VRIES ", ago=dt.timedelta(hours=5))
BOB = Person("203.0.113.5", "Bob Bakker", phone="06-99887766", email="Bob.Bakker@Example.org", ago=dt.timedelta(days=1))
CARLA = Person("192.0.2.30", None, phone="+31 6 5555 1234", ago=dt.timedelta(hours=3))
EVERYONE = (ANNA_1, ANNA_2, BOB, CARLA)


async def seed(store: SqlStore, people: Sequence[Person], controller: str = "default",
               now: dt.datetime | None = None) -> list[int]:
    """One room of `controller` with a session per person; the session ids, in order."""
    now = now or dt.datetime.now(dt.UTC)
    oldest = max(p.ago for p in people)
    room = f"room-{secrets.token_hex(8)}"
    await store.create_room(room, now - oldest, now + dt.timedelta(days=1), controller_id=controller)
    return [
        await store.open_session(room, p.ip, p.name, now - p.ago, phone=p.phone, email=p.email) for p in people
    ]


def one_month_after(day: dt.date) -> dt.date:
    """The same day of the next calendar month, or that month's last day (31 January -> 28/29 February)."""
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


# --- fixtures ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accounts:
    template: Path
    """A data folder holding the four operator accounts (olga disabled) and nothing else."""
    made: dict[str, Result]
    """What `operator add` printed for each account."""
    listing: Result
    """`operator list` afterwards."""


@pytest.fixture(scope="module")
def accounts(tmp_path_factory: pytest.TempPathFactory) -> Accounts:
    """The first admin bootstraps itself, then creates a privacy officer, an auditor and a second privacy
    officer that it disables again."""
    data = tmp_path_factory.mktemp("accounts") / "data"
    made = {"ada": ok(admin(data, None, "operator", "add", "ada", "--role", "admin", stdin=PASSWORDS["ada"] + "\n"))}
    for name in ("pim", "aud", "olga"):
        made[name] = ok(admin(data, "ada", "operator", "add", name, "--role", ROLES[name], "--password-stdin",
                              stdin=PASSWORDS[name] + "\n"))
    ok(admin(data, "ada", "operator", "disable", "olga"))
    listing = ok(admin(data, "ada", "operator", "list"))
    return Accounts(template=data, made=made, listing=listing)


def copy_installation(template: Path, target: Path) -> Path:
    """Copy a data folder and its key folder (kept beside it, not inside)."""
    shutil.copytree(default_key_folder(template), default_key_folder(target))
    return Path(shutil.copytree(template, target))


@pytest.fixture
def data_dir(accounts: Accounts, tmp_path: Path) -> Path:
    """A fresh copy of the template folder: its own database, keys and operators."""
    return copy_installation(accounts.template, tmp_path / "data")


# --- operators and the authorisation matrix ------------------------------------------------------------


def test_bootstrap_makes_the_first_admin_who_adds_the_others(accounts: Accounts, tmp_path: Path) -> None:
    for name, result in accounts.made.items():
        assert f"operator {name} ({ROLES[name]}) created." in result.stdout
        # The TOTP secret is shown once, as an otpauth URI for the authenticator app.
        assert re.search(rf"^otpauth://totp/kijkmee:{name}\?secret=[A-Z2-7]+&", result.stdout, re.M), result.stdout
        assert PASSWORDS[name] not in result.stdout + result.stderr
    assert accounts.listing.stdout.splitlines() == [
        "ada  admin", "aud  auditor", "olga  privacy_officer  disabled", "pim  privacy_officer",
    ]

    empty = tmp_path / "empty"
    not_admin, weak = [
        admin(empty, None, "operator", "add", "eve", "--role", "auditor", stdin="a long enough passphrase 1\n"),
        admin(empty, None, "operator", "add", "eve", "--role", "admin", stdin="password1234\n"),
    ]
    refused(not_admin, "the first operator must be an admin")
    refused(weak, "too common")

    # Once accounts exist, only a role with operators.manage adds more.
    data = copy_installation(accounts.template, tmp_path / "data")
    refused(admin(data, "pim", "operator", "add", "mallory", "--role", "admin", stdin=PASSWORDS["pim"] + "\n"),
            "may not", "operators.manage")
    assert ok(admin(data, "ada", "operator", "list")).stdout == accounts.listing.stdout


def test_a_role_without_the_permission_is_refused_and_nothing_changes(data_dir: Path) -> None:
    ids = with_store(data_dir, lambda s: seed(s, EVERYONE))

    async def state(store: SqlStore) -> tuple[Any, ...]:
        return (await store.list_sessions(), await store.list_requests(), await store.audit_entries(),
                await store.list_controllers(), await store.list_breaches())

    before = with_store(data_dir, state)
    anna = ["--controller", "default", "--name", "anna de vries"]
    cases: list[tuple[str, list[str], list[str]]] = [
        # The admin runs the service but reads no personal data.
        ("ada", ["subject", "find", *anna], ["the role 'admin' may not do subjects.search"]),
        ("ada", ["subject", "access", *anna], ["the role 'admin' may not do subjects.export"]),
        ("ada", ["controller", "export", "default"], ["the role 'admin' may not do controllers.export"]),
        # The auditor sees ids only and changes nothing.
        ("aud", ["subject", "erase", *anna], ["the role 'auditor' may not do subjects.erase"]),
        ("aud", ["controller", "offboard", "default", "--grace-days", "0"], ["may not do controllers.offboard"]),
        ("pim", ["retention", "run"], ["the role 'privacy_officer' may not do retention.run"]),
        ("pim", ["controller", "add", "acme", "--name", "Acme"], ["may not do operators.manage"]),
        ("nobody", ["register"], ["there is no enabled operator account 'nobody'", "--as NAME"]),
        ("olga", ["subject", "find", *anna], ["there is no enabled operator account 'olga'"]),  # disabled
    ]
    results = admin_all(data_dir, [(actor, args) for actor, args, _ in cases])
    for result, (_, _, words) in zip(results, cases, strict=True):
        line = refused(result, *words)
        for person in EVERYONE:
            for value in person.values():
                assert value not in line

    after = with_store(data_dir, state)
    # Nothing changed but the audit log, which now traces each refusal of an existing account (annex 2).
    assert after[:2] == before[:2] and after[3:] == before[3:]
    old = len(before[2])
    assert after[2][:old] == before[2]
    assert sorted((e.actor, e.action, e.object_id) for e in after[2][old:]) == sorted(
        (actor, "access.denied", f"permission:{permission}") for actor, permission in (
            ("ada", "subjects.search"), ("ada", "subjects.export"), ("ada", "controllers.export"),
            ("aud", "subjects.erase"), ("aud", "controllers.offboard"),
            ("pim", "retention.run"), ("pim", "operators.manage"),
        )
    )
    assert [s.id for s in after[0]] == ids
    assert not (default_key_folder(data_dir) / "acme.key").exists()


# --- data-subject requests -----------------------------------------------------------------------------


def test_subject_access_exports_every_session_of_the_subject_and_no_one_else(data_dir: Path) -> None:
    async def setup(store: SqlStore) -> list[int]:
        await store.ensure_controller("acme", "Acme BV", dt.datetime.now(dt.UTC))
        await seed(store, [ANNA_1], controller="acme")  # the same person at another controller: not ours to give
        return await seed(store, EVERYONE)

    anna_1, anna_2, bob, carla = with_store(data_dir, setup)
    received = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=10)
    out, report = data_dir.parent / "anna.json", data_dir.parent / "anna-report.md"
    out.write_text("stale\n")
    out.chmod(0o644)  # an existing file is rewritten owner-only too
    result = ok(admin(data_dir, "pim", "subject", "access", "--controller", "default", "--name", "anna de vries",
                      "--received-at", received.isoformat(), "--out", out.name, "--report", report.name))
    assert result.stdout == ""
    assert "2 session(s)" in result.stderr

    export = json.loads(out.read_text(encoding="utf-8"))
    jsonschema.validate(export, SUBJECT_EXPORT_SCHEMA)
    jsonschema.validate(export, json.loads((SCHEMA_DIR / "subject-export-1.json").read_text(encoding="utf-8")))
    assert export["controller_id"] == "default"
    sessions = {s["id"]: s for s in export["sessions"]}
    assert sorted(sessions) == [anna_1, anna_2]
    assert (sessions[anna_1]["ip"], sessions[anna_1]["name"], sessions[anna_1]["phone"], sessions[anna_1]["email"]) \
        == (ANNA_1.ip, ANNA_1.name, ANNA_1.phone, ANNA_1.email)
    assert (sessions[anna_2]["ip"], sessions[anna_2]["name"]) == (ANNA_2.ip, ANNA_2.name)
    text = out.read_text(encoding="utf-8")
    for value in [*BOB.values(), *CARLA.values()]:
        assert value not in text, value
    assert bob not in sessions and carla not in sessions
    for path in (out, report):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

    markdown = report.read_text(encoding="utf-8")
    assert f"- Received: {received.isoformat()}T00:00:00" in markdown
    assert f"- Deadline: {one_month_after(received).isoformat()}T00:00:00" in markdown
    assert "(one month after receipt)" in markdown and "(on time)" in markdown
    assert f"(ids {anna_1}, {anna_2})" in markdown
    for value in [*ANNA_1.values(), *ANNA_2.values()]:
        assert value not in markdown  # the report is for the controller's files: ids only

    (request,) = with_store(data_dir, lambda s: s.list_requests("default"))
    assert (request.kind, request.handled_by, request.session_ids) == ("access", "pim", (anna_1, anna_2))
    assert request.deadline.date() == one_month_after(received)


def test_rectify_erase_and_restrict_by_name_phone_and_ip(data_dir: Path) -> None:
    anna_1, anna_2, bob, carla = with_store(data_dir, lambda s: seed(s, EVERYONE))
    who = ["--controller", "default"]

    # art. 16, found by phone number written another way.
    report = data_dir.parent / "rectify.json"
    ok(admin(data_dir, "pim", "subject", "rectify", *who, "--phone", "+31 6 1234 5678", "--set-name", "Anna Jansen",
             "--report", report.name))
    jsonschema.validate(json.loads(report.read_text(encoding="utf-8")), REQUEST_REPORT_SCHEMA)
    # art. 17 by name, art. 18 by IP address.
    ok(admin(data_dir, "pim", "subject", "erase", *who, "--name", "BOB  bakker"))
    ok(admin(data_dir, "pim", "subject", "restrict", *who, "--ip", CARLA.ip))

    new_name, old_name, erased, restricted = admin_all(data_dir, [
        ("pim", ["subject", "find", *who, "--name", "anna jansen"]),
        ("pim", ["subject", "find", *who, "--name", "Anna de Vries"]),
        ("pim", ["subject", "find", *who, "--email", "bob.bakker@example.org"]),
        ("pim", ["subject", "find", *who, "--phone", "0031 6 5555 1234"]),
    ])
    assert re.fullmatch(rf"session {anna_1}  room \S+  joined \S+\n", ok(new_name).stdout)
    assert re.fullmatch(rf"session {anna_2}  room \S+  joined \S+\n", ok(old_name).stdout)  # only the other visit
    assert ok(erased).stdout == "" and "0 session(s) found" in erased.stderr
    assert re.fullmatch(rf"session {carla}  room \S+  joined \S+  \(restricted\)\n", ok(restricted).stdout)

    async def check(store: SqlStore) -> None:
        rows = {s.id: s for s in await store.list_sessions()}
        assert sorted(rows) == [anna_1, anna_2, carla]  # Bob's row is gone
        assert (rows[anna_1].name, rows[anna_1].phone, rows[anna_1].email) == ("Anna Jansen", ANNA_1.phone,
                                                                               ANNA_1.email)
        assert rows[anna_2].name == ANNA_2.name
        assert rows[carla].restricted_at is not None
        # Restricted: out of the controller's read path, still there for the subject's own rights.
        visible = await store.read_sessions("pim", dt.datetime.now(dt.UTC), "default")
        assert [s.id for s in visible] == [anna_1, anna_2]
        requests = await store.list_requests("default")
        assert [(r.kind, r.session_ids, r.outcome) for r in requests] == [
            ("rectify", (anna_1,), {"fields_changed": "name", "searched_by": "phone", "sessions_found": 1,
                                    "sessions_rectified": 1}),
            ("erase", (bob,), {"searched_by": "name", "sessions_erased": 1, "sessions_found": 1}),
            ("restrict", (carla,), {"searched_by": "ip", "sessions_found": 1, "sessions_restricted": 1}),
        ]
        assert all(r.completed_at is not None and r.handled_by == "pim" for r in requests)

    with_store(data_dir, check)


def test_requests_list_shows_deadlines_and_fails_when_one_is_overdue(data_dir: Path) -> None:
    now = dt.datetime.now(dt.UTC)

    async def recent(store: SqlStore) -> str:
        await store.ensure_controller("acme", "Acme BV", now)
        return (await store.record_request("default", "access", now - dt.timedelta(days=2), "pim", now)).id

    fresh = with_store(data_dir, recent)
    on_time = ok(admin(data_dir, "pim", "requests", "list"))
    received = (now - dt.timedelta(days=2)).date()
    assert on_time.stdout == (f"{fresh}  default  access    received {received}"
                              f"  deadline {one_month_after(received)}  open\n")

    old = with_store(data_dir, lambda s: s.record_request("default", "erase", now - dt.timedelta(days=40), "pim", now))
    late, other_controller = admin_all(data_dir, [("pim", ["requests", "list"]),
                                                  ("pim", ["requests", "list", "--controller", "acme"])])
    assert late.returncode == 1, late
    lines = late.stdout.splitlines()
    assert len(lines) == 2
    old_received = (now - dt.timedelta(days=40)).date()
    assert lines[0] == (f"{old.id}  default  erase     received {old_received}"
                        f"  deadline {one_month_after(old_received)}  OVERDUE")
    assert lines[1].startswith(f"{fresh}  default  access") and lines[1].endswith("  open")
    assert late.stderr == "1 request(s) past their one-month deadline\n"
    assert ok(other_controller).stdout == ""


# --- controllers: export and offboarding --------------------------------------------------------------


def test_controller_export_and_offboarding_delete_only_that_controller(data_dir: Path) -> None:
    added = ok(admin(data_dir, "ada", "controller", "add", "acme", "--name", "Acme BV"))
    assert added.stdout == "controller acme (Acme BV): active\n"
    key = default_key_folder(data_dir) / "acme.key"
    assert key.exists()

    async def setup(store: SqlStore) -> tuple[list[int], list[int]]:
        return await seed(store, [ANNA_1, BOB], controller="acme"), await seed(store, [ANNA_2, CARLA])

    acme_ids, default_ids = with_store(data_dir, setup)
    out = data_dir.parent / "acme.json"
    ok(admin(data_dir, "pim", "controller", "export", "acme", "--out", out.name))
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    export = json.loads(out.read_text(encoding="utf-8"))
    jsonschema.validate(export, CONTROLLER_EXPORT_SCHEMA)
    jsonschema.validate(export, json.loads((SCHEMA_DIR / "controller-export-1.json").read_text(encoding="utf-8")))
    assert export["controller"]["id"] == "acme" and export["controller"]["status"] == "active"
    assert [s["id"] for s in export["sessions"]] == acme_ids
    assert {(s["ip"], s["name"]) for s in export["sessions"]} == {(ANNA_1.ip, ANNA_1.name), (BOB.ip, BOB.name)}
    assert len(export["rooms"]) == 1
    text = out.read_text(encoding="utf-8")
    for value in (ANNA_2.ip, ANNA_2.name, CARLA.ip, CARLA.phone):
        assert value is not None and value not in text

    # Agreement art. 3.3: at most one calendar month.
    too_long = admin(data_dir, "ada", "controller", "offboard", "acme", "--grace-days", "40")
    refused(too_long, "the grace period is at most one calendar month (art. 3.3)")
    acme = with_store(data_dir, lambda s: s.get_controller("acme"))
    assert acme is not None and (acme.status, acme.delete_after) == ("active", None)

    offboard = ok(admin(data_dir, "ada", "controller", "offboard", "acme", "--grace-days", "0"))
    assert "controller acme is ending its service" in offboard.stdout
    assert key.exists()  # nothing is deleted before the job runs
    refused(admin(data_dir, "ada", "controller", "offboard", "acme"), "already ending its service")

    run = ok(admin(data_dir, "ada", "retention", "run"))
    assert "deleted controllers whose grace period ended: acme\n" in run.stdout
    assert not key.exists()
    assert (default_key_folder(data_dir) / "default.key").exists()

    async def check(store: SqlStore) -> None:
        acme = await store.get_controller("acme")
        assert acme is not None and acme.status == "deleted" and acme.deleted_at is not None
        assert [s.id for s in await store.list_sessions()] == default_ids
        assert [s.id for s in await store.read_sessions("pim", dt.datetime.now(dt.UTC), "default")] == default_ids

    with_store(data_dir, check)
    listing, export_again = admin_all(data_dir, [("ada", ["controller", "list"]),
                                                 ("pim", ["controller", "export", "acme"])])
    assert re.search(r"^acme  deleted  Acme BV  deleted \d{4}-\d{2}-\d{2}$", ok(listing).stdout, re.M)
    refused(export_again, "controller 'acme' was deleted")


# --- retention -----------------------------------------------------------------------------------------


def test_retention_run_anonymises_sessions_past_the_period_and_keeps_recent_ones(data_dir: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    long_ago = now - dt.timedelta(days=100)

    async def setup(store: SqlStore) -> tuple[list[int], str]:
        room = f"room-{secrets.token_hex(8)}"
        await store.create_room(room, long_ago, long_ago + dt.timedelta(hours=1))
        old = [await store.open_session(room, p.ip, p.name, long_ago, phone=p.phone, email=p.email)
               for p in (ANNA_1, BOB, CARLA)]
        for sid in old:
            await store.close_session(sid, long_ago + dt.timedelta(minutes=31), participants=3)
            await store.report_session(sid, "relay", 1234)
        await store.restrict_sessions("default", old[2:], "pim", now, "req-test")  # out of telemetry too
        return await seed(store, [ANNA_2]), room

    recent, old_room = with_store(data_dir, setup)
    first = ok(admin(data_dir, "ada", "retention", "run"))
    assert re.match(r"anonymised 3 sessions that joined before \S+ "
                    r"\(2 anonymous visits kept, 1 expired rooms removed\)", first.stdout), first.stdout
    again = ok(admin(data_dir, "ada", "retention", "run"))
    assert again.stdout.startswith("anonymised 0 sessions")

    async def check(store: SqlStore) -> None:
        assert [s.id for s in await store.list_sessions()] == recent
        visits = await store.list_visits()
        assert [(v.day, v.duration_minutes, v.participants, v.route, v.setup_ms) for v in visits] == \
            [(long_ago.date().isoformat(), 30, 3, "relay", 1200)] * 2
        assert len({v.visitor for v in visits}) == 2
        assert all(re.fullmatch(r"[0-9a-f]{32}", v.visitor) for v in visits)
        assert await store.get_room(old_room) is None

    with_store(data_dir, check)


# --- audit log -----------------------------------------------------------------------------------------


def test_audit_export_names_operators_and_ids_but_no_personal_data(data_dir: Path) -> None:
    with_store(data_dir, lambda s: seed(s, EVERYONE))
    who = ["--controller", "default"]
    ok(admin(data_dir, "pim", "subject", "access", *who, "--name", "anna de vries", "--out", "a.json"))
    ok(admin(data_dir, "pim", "subject", "rectify", *who, "--email", BOB.email or "", "--set-phone", "0687654321"))
    ok(admin(data_dir, "pim", "subject", "erase", *who, "--phone", CARLA.phone or ""))
    ok(admin(data_dir, "pim", "subject", "find", *who, "--ip", ANNA_2.ip))
    out = data_dir.parent / "audit.jsonl"
    ok(admin(data_dir, "aud", "audit", "export", "--out", out.name))

    text = out.read_text(encoding="utf-8")
    entries = [json.loads(line) for line in text.splitlines()]
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    actions = [(e["actor"], e["action"]) for e in entries]
    for expected in [("ada", "operator.change"), ("pim", "subject.search"), ("pim", "subject.export"),
                     ("pim", "subject.rectify"), ("pim", "subject.erase"), ("aud", "audit.read")]:
        assert expected in actions
    assert entries[-1]["action"] == "audit.read"  # reading the log is itself logged
    folded = text.casefold()
    for value in [*(v for p in EVERYONE for v in p.values()), "0687654321", "+31687654321"]:
        assert value.casefold() not in folded, value
    assert not re.search(r"(?<![0-9.])(?:\d{1,3}\.){3}\d{1,3}(?![0-9.])", text)


def tamper(database: Path, *statements: str) -> None:
    """Change the SQLite file directly, as someone with access to the disk could."""
    db = sqlite3.connect(database)
    try:
        with db:
            for statement in statements:
                db.execute(statement)
    finally:
        db.close()


def test_audit_verify_detects_a_cut_off_end_and_an_edited_entry(data_dir: Path) -> None:
    intact = ok(admin(data_dir, "aud", "audit", "verify"))
    assert intact.stdout.startswith("OK: ")
    found = re.search(r"^head ([0-9a-f]{64}) \((\d+) entries\)", intact.stdout, re.M)
    assert found, intact.stdout
    head, count = found.groups()
    assert int(count) >= 5

    database = data_dir / "kijkmee.sqlite3"
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        tamper(database, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")

    # Cut off the newest entry: still a valid chain, but the head exported earlier is gone.
    tamper(database, "DROP TRIGGER audit_log_append_only_delete",
           "DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)")
    alone, against_head = admin_all(data_dir, [("aud", ["audit", "verify"]),
                                               ("aud", ["audit", "verify", "--head", head, "--count", count])])
    assert ok(alone).stdout.startswith("OK: ")
    assert against_head.returncode == 1, against_head
    assert against_head.stdout.startswith("TAMPERED: ")

    tamper(database, "DROP TRIGGER audit_log_append_only_update",
           "UPDATE audit_log SET actor = 'mallory' WHERE seq = 2")
    edited = admin(data_dir, "pim", "audit", "verify")
    assert edited.returncode == 1, edited
    assert edited.stdout.startswith("TAMPERED: ")


# --- breaches ------------------------------------------------------------------------------------------


def breach_document(breach_id: str, discovered_at: dt.datetime) -> dict[str, Any]:
    """A complete breach as an operator writes it by hand (the AP form's fields; no bookkeeping fields)."""
    return {
        "id": breach_id,
        "discovered_at": discovered_at.isoformat(),
        "affected": [{"controller_id": "default", "data_subjects": [10, 40], "records": [25, 120]}],
        "nature": ["confidentiality"],
        "summary": "A support laptop with an export of session rows was stolen from a car.",
        "subject_categories": ["controller-customers"],
        "data_classes": ["ip", "typed-name"],
        "contact": {"name": "Privacy desk", "function": "DPO", "email": "privacy@kijkmee.invalid", "phone": ""},
        "likely_consequences": "Low: the disk was encrypted, but names could be read if the password leaks.",
        "measures_taken": "Remote wipe requested; the laptop's operator account disabled.",
    }


def test_breach_notification_is_written_and_refused_while_a_field_is_missing(data_dir: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    work = data_dir.parent
    (work / "b.json").write_text(json.dumps(breach_document("2026-001", now - dt.timedelta(hours=2))))
    incomplete = breach_document("2026-002", now - dt.timedelta(hours=1))
    del incomplete["likely_consequences"]
    (work / "b2.json").write_text(json.dumps(incomplete))

    saved = ok(admin(data_dir, "pim", "breach", "save", "--file", "b.json"))
    deadline = (now - dt.timedelta(hours=2) + dt.timedelta(hours=48)).strftime("%Y-%m-%d %H:%M")
    assert saved.stdout == (f"breach 2026-001 saved; controllers must be told before {deadline} UTC"
                            " (48 hours after discovery)\n")
    saved_2 = ok(admin(data_dir, "ada", "breach", "save", "--file", "b2.json"))
    assert "still missing before anyone can be notified: likely_consequences\n" in saved_2.stdout

    sent = ok(admin(data_dir, "pim", "breach", "notify", "2026-001", "--controller", "default", "--out", "n", "--sent"))
    assert "controller default marked as notified" in sent.stderr
    markdown, document = (work / "n.md").read_text(encoding="utf-8"), json.loads((work / "n.json").read_text())
    jsonschema.validate(document, breaches.BREACH_NOTIFICATION_SCHEMA)
    assert (document["breach_id"], document["controller_id"]) == ("2026-001", "default")
    assert document["data_subjects"]["approximate_number"] == {"low": 10, "high": 40}
    assert markdown.startswith("# Melding datalek (personal data breach notification) 2026-001\n")
    assert "A support laptop" in markdown and "Privacy desk" in markdown
    for path in (work / "n.md", work / "n.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    missing, by_admin = admin_all(data_dir, [
        ("pim", ["breach", "notify", "2026-002", "--controller", "default", "--out", "n2", "--sent"]),
        ("ada", ["breach", "notify", "2026-001", "--controller", "default", "--out", "n3", "--sent"]),
    ])
    refused(missing, "2026-002 cannot be notified", "likely_consequences")
    refused(by_admin, "may not", "breaches.notify")
    assert not list(work.glob("n2.*")) and not list(work.glob("n3.*"))

    async def stored(store: SqlStore) -> list[breaches.Breach]:
        return [breaches.breach_from_json(r.document) for r in await store.list_breaches()]

    first, second = with_store(data_dir, stored)
    assert first.affected[0].notified_at is not None and first.status is breaches.BreachStatus.NOTIFIED
    assert second.affected[0].notified_at is None and second.status is breaches.BreachStatus.OPEN

    listing = ok(admin(data_dir, "aud", "breach", "list"))
    assert [line.split("  ")[:2] for line in listing.stdout.splitlines()] == [["2026-001", "notified"],
                                                                               ["2026-002", "open"]]
    assert "OVERDUE" not in listing.stdout


def test_breach_list_flags_one_not_notified_within_48_hours(data_dir: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    work = data_dir.parent
    (work / "late.json").write_text(json.dumps(breach_document("2026-007", now)))
    discovered = (now - dt.timedelta(hours=49)).replace(microsecond=0)
    ok(admin(data_dir, "pim", "breach", "save", "--file", "late.json", "--discovered-at", discovered.isoformat()))
    (work / "fresh.json").write_text(json.dumps(breach_document("2026-008", now - dt.timedelta(hours=47))))
    ok(admin(data_dir, "pim", "breach", "save", "--file", "fresh.json"))

    listing = admin(data_dir, "aud", "breach", "list")
    assert listing.returncode == 1, listing
    late, fresh = listing.stdout.splitlines()
    assert late == (f"2026-007  open  discovered {discovered:%Y-%m-%d %H:%M} UTC"
                    f"  deadline {discovered + dt.timedelta(hours=48):%Y-%m-%d %H:%M} UTC  OVERDUE: default")
    assert fresh.startswith("2026-008  open  ") and "OVERDUE" not in fresh
    assert listing.stderr == "1 breach(es) not reported to every controller within 48 hours\n"

    ok(admin(data_dir, "pim", "breach", "notify", "2026-007", "--controller", "default", "--sent"))
    assert ok(admin(data_dir, "aud", "breach", "list")).stdout.startswith("2026-007  notified  ")


# --- register of processing --------------------------------------------------------------------------


def test_register_of_processing_validates_and_names_the_controllers(data_dir: Path) -> None:
    env = {**ENV, "KIJKMEE_OPERATOR": "aud"}  # who, from the environment instead of --as
    as_json = admin(data_dir, "aud", "register", "--format", "json", "--out", "register.json")
    as_markdown = admin(data_dir, None, "register", env=env)
    ok(as_json)
    register = json.loads((data_dir.parent / "register.json").read_text(encoding="utf-8"))
    assert validate_register(register) == []
    assert [c["id"] for c in register["controllers"]] == ["default"]
    assert ok(as_markdown).stdout.startswith("# Register van verwerkingsactiviteiten")
    assert "**Default** (`default`)" in as_markdown.stdout


# --- usage --------------------------------------------------------------------------------------------


def test_admin_without_a_command_prints_usage_and_exits_2(tmp_path: Path) -> None:
    bare, group, helped = [
        kijkmee("admin", cwd=tmp_path), kijkmee("admin", "subject", cwd=tmp_path),
        kijkmee("admin", "--help", cwd=tmp_path),
    ]
    assert bare.returncode == 2 and bare.stderr.startswith("usage: kijkmee admin ")
    assert "required: COMMAND" in bare.stderr and bare.stdout == ""
    assert group.returncode == 2 and group.stderr.startswith("usage: kijkmee admin subject ")
    assert ok(helped).stdout.startswith("usage: kijkmee admin ")
    for group_name in ("retention", "subject", "requests", "controller", "audit", "operator", "breach", "register"):
        assert re.search(rf"^    {group_name} +\S", helped.stdout, re.M), group_name
    assert not list(tmp_path.iterdir())  # usage alone creates no data folder


def _admin_commands() -> Iterator[tuple[list[str], argparse.ArgumentParser]]:
    def walk(parser: argparse.ArgumentParser, path: list[str]) -> Iterator[tuple[list[str], argparse.ArgumentParser]]:
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from walk(child, [*path, name])

    (top,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    yield from walk(top.choices["admin"], [])


ADMIN_COMMANDS = [path for path, _ in _admin_commands()]


@pytest.mark.parametrize("path", ADMIN_COMMANDS, ids=lambda path: " ".join(path) or "admin")
def test_every_admin_command_has_help(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """In-process (the same parser the script runs) so that every command can be covered cheaply."""
    with pytest.raises(SystemExit) as exit_:
        main(["admin", *path, "--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"usage: kijkmee admin {' '.join(path)}".rstrip())
    parser = dict((tuple(p), parser) for p, parser in _admin_commands())[tuple(path)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):  # each command is explained in its group's help
            for choice in action._choices_actions:
                assert choice.help and re.search(rf"^    {re.escape(choice.dest)} +\S", shown, re.M), choice.dest


# --- published schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_published_schema_files_equal_the_code(name: str) -> None:
    schema = SCHEMAS[name]
    jsonschema.Draft202012Validator.check_schema(schema)
    expected = (json.dumps(schema, indent=2, sort_keys=True) + "\n").encode()
    assert (SCHEMA_DIR / name).read_bytes() == expected, "regenerate with: python -m metadata_store.exports"
