"""The hash-chained audit log: tampering of every kind is reported, personal data is refused."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metadata_store.audit import (
    GENESIS_HASH,
    Action,
    AuditEntry,
    AuditError,
    Problem,
    VerifyResult,
    append,
    canonical_bytes,
    compute_hash,
    entry_from_json,
    entry_to_json,
    verify,
)

T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)

STEPS: list[tuple[str, str, str]] = [
    ("alice", Action.SESSION_READ, "session/41"),
    ("api:ctrl-7f3a", Action.SESSION_WRITE, "session/42"),
    ("job:retention", Action.SESSION_ANONYMISE, "session/40"),
    ("bob.privacy", Action.SUBJECT_SEARCH, "subject:9c1e5b"),
    ("bob.privacy", Action.SUBJECT_EXPORT, "subject:9c1e5b"),
    ("bob.privacy", "subject.erase", "subject:9c1e5b"),
]


def build(count: int = len(STEPS)) -> list[AuditEntry]:
    chain: list[AuditEntry] = []
    for minute, (actor, action, object_id) in enumerate(STEPS[:count]):
        chain.append(append(chain[-1] if chain else None, actor, action, object_id, T0 + dt.timedelta(minutes=minute)))
    return chain


def failure(result: VerifyResult) -> tuple[Problem | None, int | None]:
    return result.problem, result.first_bad_seq


# --- building and serialising -------------------------------------------------------------------


def test_append_numbers_and_links_entries() -> None:
    chain = build()
    assert [e.seq for e in chain] == [1, 2, 3, 4, 5, 6]
    assert chain[0].prev_hash == GENESIS_HASH == "0" * 64
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(chain))
    assert all(compute_hash(e) == e.hash for e in chain)
    assert type(chain[0].action) is str and chain[0].action == "session.read"


def test_canonical_serialisation_is_fixed() -> None:
    # Golden values: a change here breaks every exported head, so it must be deliberate.
    entry = append(None, "alice", Action.SESSION_READ, "session/42", T0)
    assert canonical_bytes(entry) == (
        b'{"action":"session.read","actor":"alice","at":"2026-11-01T12:00:00.000000Z","object_id":"session/42",'
        b'"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","seq":1}'
    )
    assert entry.hash == hashlib.sha256(bytes(32) + canonical_bytes(entry)).hexdigest()
    assert entry.hash == "577d538c19189dbe865de70d1019765a9bbcd5caa7b10406348672dda0e36807"


def test_timestamps_are_normalised_to_utc_with_z() -> None:
    amsterdam = dt.timezone(dt.timedelta(hours=1))
    local = append(None, "alice", "session.read", "session/42", dt.datetime(2026, 11, 1, 13, 0, tzinfo=amsterdam))
    utc = append(None, "alice", "session.read", "session/42", T0)
    assert local == utc and local.at.tzinfo is dt.UTC
    with pytest.raises(AuditError, match=r"^timestamp must be a timezone-aware datetime$"):
        append(None, "alice", "session.read", "session/42", dt.datetime(2026, 11, 1, 12, 0))


def test_json_lines_round_trip() -> None:
    chain = build()
    lines = [entry_to_json(e) for e in chain]
    assert [entry_from_json(line) for line in lines] == chain
    assert verify([entry_from_json(line) for line in lines], chain[-1].hash).ok


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "audit line is not JSON"),
        ("[]", "audit line must hold exactly: seq, at, actor, action, object_id, prev_hash, hash"),
        ('{"seq": 1}', "audit line must hold exactly: seq, at, actor, action, object_id, prev_hash, hash"),
        (
            '{"seq":"1","at":"","actor":"","action":"","object_id":"","prev_hash":"","hash":""}',
            "audit line: seq must be an integer and the other fields strings",
        ),
        (
            '{"seq":1,"at":"yesterday","actor":"","action":"","object_id":"","prev_hash":"","hash":""}',
            "timestamp must look like 2026-01-31T12:00:00.000000Z",
        ),
    ],
)
def test_json_lines_that_are_not_entries_are_refused(line: str, message: str) -> None:
    with pytest.raises(AuditError) as caught:
        entry_from_json(line)
    assert str(caught.value) == message


# --- verification ---------------------------------------------------------------------------------


def test_an_intact_chain_verifies() -> None:
    chain = build()
    result = verify(chain, expected_head=chain[-1].hash, expected_count=6)
    assert result == VerifyResult(True, None, None, "6 entries, chain intact, exported head found", 6, chain[-1].hash)
    assert verify(chain) == VerifyResult(True, None, None, "6 entries, chain intact", 6, chain[-1].hash)


def test_an_empty_log_verifies_only_against_the_genesis_head() -> None:
    assert verify([]).ok
    assert verify([], GENESIS_HASH).ok
    assert failure(verify([], build(1)[0].hash)) == (Problem.TRUNCATED, 1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("at", T0 + dt.timedelta(hours=5)),
        ("actor", "mallory"),
        ("action", "session.write"),
        ("object_id", "session/99"),
        ("prev_hash", "f" * 64),
        ("hash", "e" * 64),
    ],
)
def test_an_edited_field_is_reported_at_its_entry(field: str, value: Any) -> None:
    chain = build()
    chain[2] = dataclasses.replace(chain[2], **{field: value})
    result = verify(chain, chain[-1].hash)
    assert failure(result) == (Problem.EDITED, 3)
    assert result.detail == "entry 3 was edited: its hash does not match its content"
    assert result.entries_checked == 2 and result.head == chain[1].hash


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link() -> None:
    chain = build()
    forged = dataclasses.replace(chain[2], actor="mallory")
    chain[2] = dataclasses.replace(forged, hash=compute_hash(forged))
    result = verify(chain)
    assert failure(result) == (Problem.BROKEN_LINK, 4)
    assert result.detail == (
        "entry 4 does not link to the entry before it: one was replaced or the chain rewritten"
    )


def test_an_edited_sequence_number_is_an_edit() -> None:
    chain = build()
    chain[2] = dataclasses.replace(chain[2], seq=7)
    assert failure(verify(chain)) == (Problem.EDITED, 7)


@pytest.mark.parametrize(("index", "seq"), [(0, 1), (2, 3), (4, 5)])
def test_a_deleted_entry_is_reported(index: int, seq: int) -> None:
    chain = build()
    del chain[index]
    result = verify(chain)
    assert failure(result) == (Problem.DELETED, seq)
    assert result.detail == f"entry {seq} is missing: entries before entry {seq + 1} were deleted"


def test_two_swapped_entries_are_reported_as_reordered() -> None:
    chain = build()
    chain[2], chain[3] = chain[3], chain[2]
    result = verify(chain)
    assert failure(result) == (Problem.REORDERED, 3)
    assert result.detail == "entry 3 is out of order: entry 4 stands there"


def test_a_replayed_entry_is_reported_as_reordered() -> None:
    chain = build()
    chain.insert(3, chain[2])
    assert failure(verify(chain)) == (Problem.REORDERED, 4)


def test_a_truncated_tail_is_found_only_with_the_exported_head_or_count() -> None:
    chain = build()
    head = chain[-1].hash
    cut = chain[:4]
    assert verify(cut).ok  # a prefix of a chain is a valid chain: that is why the head is exported
    by_head = verify(cut, expected_head=head)
    assert failure(by_head) == (Problem.TRUNCATED, 5)
    assert by_head.detail == (
        "the exported head is not in the log: entries after entry 4 were removed, or the log was rewritten"
    )
    by_count = verify(cut, expected_count=6)
    assert failure(by_count) == (Problem.TRUNCATED, 5)
    assert by_count.detail == "the log holds 4 entries but 6 were exported: the tail was removed"


def test_a_log_that_grew_after_its_head_was_exported_verifies() -> None:
    chain = build()
    assert verify(chain, expected_head=chain[3].hash.upper(), expected_count=4).ok


def test_a_consistently_rewritten_chain_is_found_by_the_exported_head() -> None:
    chain = build()
    rewritten: list[AuditEntry] = []
    for entry in chain:
        actor = "mallory" if entry.seq == 3 else entry.actor
        rewritten.append(append(rewritten[-1] if rewritten else None, actor, entry.action, entry.object_id, entry.at))
    assert verify(rewritten).ok
    assert failure(verify(rewritten, chain[-1].hash)) == (Problem.TRUNCATED, 7)


def test_a_malformed_entry_or_head_is_reported_not_raised() -> None:
    chain = build()
    broken = list(chain)
    broken[1] = dataclasses.replace(chain[1], at=dt.datetime(2026, 11, 1))  # naive
    result = verify(broken)
    assert failure(result) == (Problem.MALFORMED, 2)
    assert result.detail == "entry 2 is malformed: timestamp must be a timezone-aware datetime"
    broken[1] = dataclasses.replace(chain[1], actor="10.0.0.8")
    assert verify(broken).detail == (
        "entry 2 is malformed: actor looks like an IP address: the audit log must not hold personal data"
    )
    assert failure(verify(chain, expected_head="not-a-hash")) == (Problem.MALFORMED, None)


# --- no personal data in the log ------------------------------------------------------------------

IP_MESSAGE = "{} looks like an IP address: the audit log must not hold personal data"
MAIL_MESSAGE = "{} looks like an e-mail address: the audit log must not hold personal data"


@pytest.mark.parametrize(
    ("actor", "message"),
    [
        ("jan@example.nl", MAIL_MESSAGE.format("actor")),
        ("api:jan@example.nl", MAIL_MESSAGE.format("actor")),
        ("192.168.1.10", IP_MESSAGE.format("actor")),
        ("api:10.0.0.1", IP_MESSAGE.format("actor")),
        ("job:2001:db8::1", IP_MESSAGE.format("actor")),
        ("::1", IP_MESSAGE.format("actor")),
        ("Jan Jansen", "actor must be a user name, api:<controller id> or job:<name> (letters, digits, . _ -)"),
        ("cron:nightly", "actor must be a user name, api:<controller id> or job:<name> (letters, digits, . _ -)"),
        ("", "actor must be a user name, api:<controller id> or job:<name> (letters, digits, . _ -)"),
    ],
)
def test_actors_that_could_be_personal_data_are_refused(actor: str, message: str) -> None:
    with pytest.raises(AuditError) as caught:
        append(None, actor, "session.read", "session/42", T0)
    assert str(caught.value) == message
    assert actor not in str(caught.value) or not actor  # never echo the refused value


OBJECT_CHARSET = "object id must be 1 to 128 characters of letters, digits and . _ : / -"


@pytest.mark.parametrize(
    ("object_id", "message"),
    [
        ("subject:jan@example.nl", MAIL_MESSAGE.format("object id")),
        ("10.1.2.3", IP_MESSAGE.format("object id")),
        ("session/192.168.0.1", IP_MESSAGE.format("object id")),
        ("2001:db8:0:0:1:0:0:1", IP_MESSAGE.format("object id")),
        ("2001:DB8:85A3:0:0:8A2E:370:7334", IP_MESSAGE.format("object id")),
        ("::ffff:1.2.3.4", IP_MESSAGE.format("object id")),
        ("fe80::1", IP_MESSAGE.format("object id")),
        ("Jan Jansen", OBJECT_CHARSET),
        ("+31612345678", OBJECT_CHARSET),
        ("", OBJECT_CHARSET),
        ("x" * 129, OBJECT_CHARSET),
    ],
)
def test_object_ids_that_could_be_personal_data_are_refused(object_id: str, message: str) -> None:
    with pytest.raises(AuditError) as caught:
        append(None, "alice", "session.read", object_id, T0)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "object_id",
    ["session/42", "subject:9c1e5b", "controller:acme-bv", "Zq3_vYk2-Lw0aB9xR4tUeA", "backup.2026-11-01", "v1.2.3",
     "x" * 128],
)
def test_opaque_ids_are_accepted(object_id: str) -> None:
    assert append(None, "alice", "session.read", object_id, T0).object_id == object_id


@given(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=64))
def test_random_url_safe_ids_are_never_refused(token: str) -> None:
    # Room ids and API keys are base64url: no '.', ':' or '@', so no false alarm can stop an audited action.
    assert append(None, "api:" + token[:60].lstrip("-_") + "x", "session.read", f"room/{token}", T0).object_id


@pytest.mark.parametrize("action", ["Session.Read", "session", "session read", "session.read.", ".read", "a.b.c.d.e"])
def test_actions_must_be_dotted_lowercase_tokens(action: str) -> None:
    with pytest.raises(AuditError, match=r"^action must be a dotted lowercase token such as session\.read$"):
        append(None, "alice", action, "session/42", T0)


# --- verify never raises --------------------------------------------------------------------------

ANYTHING = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20), st.binary(max_size=8),
    st.datetimes(timezones=st.sampled_from([None, dt.UTC, dt.timezone(dt.timedelta(hours=14))])),
)
FIELDS = [f.name for f in dataclasses.fields(AuditEntry)]


@st.composite
def mutations(draw: st.DrawFn) -> list[AuditEntry]:
    chain = build()
    kind = draw(st.sampled_from(["edit", "delete", "swap", "truncate", "duplicate", "insert"]))
    i = draw(st.integers(0, len(chain) - 1))
    if kind == "edit":
        chain[i] = dataclasses.replace(chain[i], **{draw(st.sampled_from(FIELDS)): draw(ANYTHING)})
    elif kind == "delete":
        del chain[i]
    elif kind == "swap":
        j = draw(st.integers(0, len(chain) - 1))
        chain[i], chain[j] = chain[j], chain[i]
    elif kind == "truncate":
        chain = chain[:i]
    elif kind == "duplicate":
        chain.insert(draw(st.integers(0, len(chain))), chain[i])
    else:
        junk = AuditEntry(*(draw(ANYTHING) for _ in FIELDS))
        chain.insert(draw(st.integers(0, len(chain))), junk)
    return chain


def typed(chain: list[AuditEntry]) -> list[tuple[tuple[type, object], ...]]:
    """Field values with their types: True == 1, but a log holding seq=True has been tampered with."""
    return [tuple((type(v), v) for v in dataclasses.astuple(e)) for e in chain]


@settings(max_examples=300, deadline=None)
@given(mutations())
def test_verify_never_raises_and_finds_every_change(mutated: list[AuditEntry]) -> None:
    original = build()
    result = verify(mutated, expected_head=original[-1].hash)
    assert result.ok == (typed(mutated) == typed(original))
    assert result.ok == (result.problem is None)
