"""The audit log as a hash chain: who read or wrote which personal data, and when (annex 2, items 3 and 5).

Every read and write of personal data by an operator, the API or a job becomes one `AuditEntry`:
an actor (an operator's user name, ``api:<controller id>`` or ``job:<name>``), an action token, the
opaque id of the object touched and a UTC timestamp. Entries are chained: each one's hash covers the
hash of the one before it, so `verify` finds an entry that was edited, deleted, reordered or cut off
the end (the last only against a head hash exported elsewhere, since a truncated chain is otherwise
still a valid chain).

The log must itself hold no personal data: entries carry subject and session ids, never names,
e-mail or IP addresses. `append` refuses actors and object ids that look like either, and its error
messages never repeat the refused value (they may end up in a log).

Pure code: no clock, no I/O. The caller passes `now` and stores what `append` returns.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

GENESIS_HASH = "0" * 64
"""The `prev_hash` of the first entry: 32 zero bytes, hex."""

MAX_OBJECT_ID_LENGTH = 128

_HEX64 = re.compile(r"[0-9a-f]{64}")
_ACTION = re.compile(r"[a-z][a-z_]{0,31}(?:\.[a-z][a-z_]{0,31}){1,3}")
_ACTOR = re.compile(r"(?:api:|job:)?[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_OBJECT_ID = re.compile(rf"[A-Za-z0-9._:/-]{{1,{MAX_OBJECT_ID_LENGTH}}}")
_IPV4 = re.compile(r"(?<![0-9])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![0-9])")
_IPV6 = re.compile(r"[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){3,}")
_TIMESTAMP = "%Y-%m-%dT%H:%M:%S.%fZ"


class AuditError(ValueError):
    """An entry that must not be written: a malformed field, or one that looks like personal data."""


class Action(enum.StrEnum):
    """The actions kijkmee writes. Any other dotted lowercase token (``thing.verb``) is accepted too."""

    SESSION_READ = "session.read"
    SESSION_WRITE = "session.write"
    SESSION_ANONYMISE = "session.anonymise"
    SUBJECT_SEARCH = "subject.search"
    SUBJECT_EXPORT = "subject.export"
    SUBJECT_RECTIFY = "subject.rectify"
    SUBJECT_ERASE = "subject.erase"
    SUBJECT_RESTRICT = "subject.restrict"
    CONTROLLER_EXPORT = "controller.export"
    CONTROLLER_OFFBOARD = "controller.offboard"
    BREACH_READ = "breach.read"
    BREACH_WRITE = "breach.write"
    BREACH_NOTIFY = "breach.notify"
    BACKUP_RUN = "backup.run"
    BACKUP_RESTORE = "backup.restore"
    AUDIT_READ = "audit.read"
    OPERATOR_LOGIN = "operator.login"
    OPERATOR_LOGIN_FAILED = "operator.login_failed"
    OPERATOR_CHANGE = "operator.change"


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit log. Build new ones with `append`; this class itself checks nothing, so
    that `verify` can report on entries read back from storage however they were damaged."""

    seq: int
    """Position in the log, 1 for the first entry, one more for each next one."""
    at: dt.datetime
    """When it happened: a timezone-aware UTC datetime."""
    actor: str
    """Who: an operator's user name, ``api:<controller id>`` or ``job:<name>``."""
    action: str
    """What: a dotted token such as ``session.read`` (see `Action`)."""
    object_id: str
    """Which object: an opaque id (subject, session, controller), never a name or address."""
    prev_hash: str
    """`hash` of the entry before, or `GENESIS_HASH` for the first one."""
    hash: str
    """SHA-256, hex, of the bytes of `prev_hash` followed by `canonical_bytes` of this entry."""


class Problem(enum.Enum):
    """Why `verify` rejected a log."""

    EDITED = "edited"
    """An entry's hash does not match its content."""
    DELETED = "deleted"
    """A sequence number is missing."""
    REORDERED = "reordered"
    """An entry stands where another sequence number belongs, and that one comes later or earlier."""
    BROKEN_LINK = "broken-link"
    """An entry's `prev_hash` is not the hash of the entry before: replaced, or a rewritten chain."""
    TRUNCATED = "truncated"
    """The exported head is not in the log, or the log holds fewer entries than were exported."""
    MALFORMED = "malformed"
    """A field of the wrong type or shape; nothing after it can be trusted."""


@dataclass(frozen=True)
class VerifyResult:
    """What `verify` found. `ok` is true exactly when `problem` is None."""

    ok: bool
    """True when the chain is intact (and contains the expected head, when one was given)."""
    problem: Problem | None
    """The first thing found wrong, or None."""
    first_bad_seq: int | None
    """The sequence number where the log first goes wrong (for truncation: the first missing one)."""
    detail: str
    """One sentence in plain English for the operator."""
    entries_checked: int
    """How many entries were checked before stopping (all of them when `ok`)."""
    head: str
    """Hash of the last good entry checked (`GENESIS_HASH` when none)."""


def _refuse_personal_data(field: str, value: str) -> None:
    if "@" in value:
        raise AuditError(f"{field} looks like an e-mail address: the audit log must not hold personal data")
    if "::" in value or _IPV4.search(value) or _IPV6.search(value):
        raise AuditError(f"{field} looks like an IP address: the audit log must not hold personal data")


def validate_actor(actor: str) -> str:
    """Return `actor` if it is a user name, ``api:<id>`` or ``job:<name>``; raise `AuditError` otherwise."""
    if not isinstance(actor, str):
        raise AuditError("actor must be a string")
    _refuse_personal_data("actor", actor)
    if not _ACTOR.fullmatch(actor):
        raise AuditError("actor must be a user name, api:<controller id> or job:<name> (letters, digits, . _ -)")
    return actor


def validate_action(action: str) -> str:
    """Return `action` as a plain string if it is a dotted lowercase token; raise `AuditError` otherwise."""
    if not isinstance(action, str) or not _ACTION.fullmatch(action):
        raise AuditError("action must be a dotted lowercase token such as session.read")
    return str(action)


def validate_object_id(object_id: str) -> str:
    """Return `object_id` if it is a short opaque token; raise `AuditError` otherwise."""
    if not isinstance(object_id, str):
        raise AuditError("object id must be a string")
    _refuse_personal_data("object id", object_id)
    if not _OBJECT_ID.fullmatch(object_id):
        raise AuditError(
            f"object id must be 1 to {MAX_OBJECT_ID_LENGTH} characters of letters, digits and . _ : / -"
        )
    return object_id


def _utc(at: dt.datetime) -> dt.datetime:
    if not isinstance(at, dt.datetime) or at.utcoffset() is None:
        raise AuditError("timestamp must be a timezone-aware datetime")
    try:
        return at.astimezone(dt.UTC)
    except OverflowError as exc:
        raise AuditError("timestamp is out of range") from exc


def format_timestamp(at: dt.datetime) -> str:
    """ISO 8601 in UTC with microseconds and a Z, the one form the hash covers."""
    return _utc(at).strftime(_TIMESTAMP)


def parse_timestamp(text: str) -> dt.datetime:
    """The inverse of `format_timestamp`."""
    try:
        return dt.datetime.strptime(text, _TIMESTAMP).replace(tzinfo=dt.UTC)
    except (TypeError, ValueError) as exc:
        raise AuditError("timestamp must look like 2026-01-31T12:00:00.000000Z") from exc


def _document(entry: AuditEntry) -> dict[str, object]:
    return {
        "seq": entry.seq,
        "at": format_timestamp(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "object_id": entry.object_id,
        "prev_hash": entry.prev_hash,
    }


def _dumps(document: Mapping[str, object]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def canonical_bytes(entry: AuditEntry) -> bytes:
    """The entry without its hash as JSON: sorted keys, no whitespace, ASCII only, timestamp with Z."""
    return _dumps(_document(entry))


def compute_hash(entry: AuditEntry) -> str:
    """SHA-256 of the raw `prev_hash` bytes followed by `canonical_bytes(entry)`, as lowercase hex."""
    return hashlib.sha256(bytes.fromhex(entry.prev_hash) + canonical_bytes(entry)).hexdigest()


def append(
    head: AuditEntry | None, actor: str, action: str, object_id: str, now: dt.datetime
) -> AuditEntry:
    """The entry that follows `head` (the log's last entry, None for an empty log). Raises `AuditError`
    for a malformed field or one that looks like an e-mail or IP address; the caller stores the result."""
    seq = 1 if head is None else head.seq + 1
    prev_hash = GENESIS_HASH if head is None else head.hash
    draft = AuditEntry(
        seq=seq,
        at=_utc(now),
        actor=validate_actor(actor),
        action=validate_action(action),
        object_id=validate_object_id(object_id),
        prev_hash=prev_hash,
        hash="",
    )
    return replace(draft, hash=compute_hash(draft))


def entry_to_json(entry: AuditEntry) -> str:
    """One line of an export: the canonical document plus its hash."""
    return _dumps({**_document(entry), "hash": entry.hash}).decode()


def entry_from_json(line: str) -> AuditEntry:
    """Parse a line written by `entry_to_json`. Raises `AuditError` when it is not such a line; the
    content is not otherwise checked here (that is `verify`'s job)."""
    try:
        doc = json.loads(line)
    except ValueError as exc:
        raise AuditError("audit line is not JSON") from exc
    fields = ("seq", "at", "actor", "action", "object_id", "prev_hash", "hash")
    if not isinstance(doc, dict) or sorted(doc) != sorted(fields):
        raise AuditError("audit line must hold exactly: " + ", ".join(fields))
    if type(doc["seq"]) is not int or not all(isinstance(doc[f], str) for f in fields[1:]):
        raise AuditError("audit line: seq must be an integer and the other fields strings")
    return AuditEntry(
        seq=doc["seq"],
        at=parse_timestamp(doc["at"]),
        actor=doc["actor"],
        action=doc["action"],
        object_id=doc["object_id"],
        prev_hash=doc["prev_hash"],
        hash=doc["hash"],
    )


def _malformed(entry: object) -> str | None:
    """Why the entry cannot be checked, or None when every field has the right type and shape."""
    if not isinstance(entry, AuditEntry):
        return "not an audit entry"
    if type(entry.seq) is not int or entry.seq < 1:
        return "seq is not a positive integer"
    for name in ("prev_hash", "hash"):
        value = getattr(entry, name)
        if not isinstance(value, str) or not _HEX64.fullmatch(value):
            return f"{name} is not 64 lowercase hex digits"
    try:
        _utc(entry.at)
        validate_actor(entry.actor)
        validate_action(entry.action)
        validate_object_id(entry.object_id)
    except AuditError as exc:
        return str(exc)
    return None


_Found = tuple[Problem, int | None, str]
"""A problem, the first bad sequence number and a sentence for the operator."""


def _result(
    problem: Problem | None, seq: int | None, detail: str, checked: int, head: str
) -> VerifyResult:
    return VerifyResult(problem is None, problem, seq, detail, checked, head)


def _check_entry(
    entry: AuditEntry, position: int, prev_hash: str, last_index: Mapping[int, int]
) -> _Found | None:
    """The problem with the entry at `position` (0-based), given the hash of the good entry before it."""
    expected = position + 1
    reason = _malformed(entry)
    if reason is not None:
        return Problem.MALFORMED, expected, f"entry {expected} is malformed: {reason}"
    try:
        recomputed = compute_hash(entry)
    except (ValueError, TypeError, OverflowError):
        return Problem.MALFORMED, expected, f"entry {expected} cannot be hashed"
    if recomputed != entry.hash:
        return Problem.EDITED, entry.seq, f"entry {entry.seq} was edited: its hash does not match its content"
    if entry.seq != expected:
        if last_index.get(expected, -1) > position or entry.seq < expected:
            return Problem.REORDERED, expected, f"entry {expected} is out of order: entry {entry.seq} stands there"
        return Problem.DELETED, expected, f"entry {expected} is missing: entries before entry {entry.seq} were deleted"
    if entry.prev_hash != prev_hash:
        return (
            Problem.BROKEN_LINK,
            entry.seq,
            f"entry {entry.seq} does not link to the entry before it: one was replaced or the chain rewritten",
        )
    return None


def _check_head(
    hashes: Sequence[str], expected_head: str | None, expected_count: int | None
) -> _Found | None:
    count = len(hashes)
    if expected_count is not None and count < expected_count:
        return (
            Problem.TRUNCATED,
            count + 1,
            f"the log holds {count} entries but {expected_count} were exported: the tail was removed",
        )
    if expected_head is None:
        return None
    wanted = expected_head.strip().lower()
    if not _HEX64.fullmatch(wanted):
        return Problem.MALFORMED, None, "the expected head is not a 64-digit hex SHA-256"
    if wanted == GENESIS_HASH or wanted in set(hashes):
        return None
    return (
        Problem.TRUNCATED,
        count + 1,
        f"the exported head is not in the log: entries after entry {count} were removed, or the log was rewritten",
    )


def verify(
    entries: Sequence[AuditEntry], expected_head: str | None = None, expected_count: int | None = None
) -> VerifyResult:
    """Check the whole chain, stopping at the first problem. Never raises on bad entries.

    `expected_head` is a hash exported elsewhere (to the controller, a ticket, another machine); the
    log may have grown since, so it must appear somewhere in the chain, not necessarily last.
    `expected_count`, when given, is the number of entries the log held when it was exported.
    """
    last_index: dict[int, int] = {}
    for index, entry in enumerate(entries):
        seq = getattr(entry, "seq", None)
        if type(seq) is int:
            last_index[seq] = index
    hashes: list[str] = []
    prev_hash = GENESIS_HASH
    for position, entry in enumerate(entries):
        found = _check_entry(entry, position, prev_hash, last_index)
        if found is not None:
            return _result(*found, position, prev_hash)
        prev_hash = entry.hash
        hashes.append(entry.hash)
    found = _check_head(hashes, expected_head, expected_count)
    if found is not None:
        return _result(*found, len(hashes), prev_hash)
    detail = f"{len(hashes)} entries, chain intact" + ("" if expected_head is None else ", exported head found")
    return _result(None, None, detail, len(hashes), prev_hash)
