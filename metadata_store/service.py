"""Data handling as operators and controllers use it: one place for what `kijkmee admin` and the admin
API both do, on top of the store (`SqlStore`) and the pure rules (audit, operators, breaches, register).

Every method takes the acting operator's user name (`actor`) and uses the injected clock. Permission
checks against the role matrix happen here too (`authorise`), so the CLI and the HTTP API cannot
drift apart.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metadata_store import audit, breaches, operators
from metadata_store.backup import BackupSummary, DeletionLedger, RestoreSummary, restore_backup, write_backup
from metadata_store.exports import controller_export, request_report, subject_export
from metadata_store.sql import SqlStore, add_months, retention_cutoff
from metadata_store.store import (
    REQUEST_KINDS,
    SUBJECT_KINDS,
    ApiKeyRecord,
    Conflict,
    NotFound,
    OperatorRecord,
    RetentionResult,
    SessionRecord,
    StoreError,
    SubjectRequestRecord,
)

Clock = Callable[[], dt.datetime]
API_KEY_PREFIX = "kmk_"
"""Every controller API key starts so, which makes a leaked one easy to find with secret scanners."""


class Forbidden(StoreError):
    """The operator's role does not allow this (annex 2: the authorisation matrix)."""

    def __init__(self, message: str, permission: str = "unknown") -> None:
        super().__init__(message)
        self.permission = permission


class SignInFailed(StoreError):
    """Wrong user name, password or code, a disabled account, or a lock; the words never say which."""

    def __init__(self, message: str = "Sign-in failed: check your user name, password and code.",
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class SubjectQuery:
    """Who a request is about: one typed value or the IP address, and when they were here."""

    kind: str
    """ip, name, phone or email."""
    value: str
    since: dt.datetime
    until: dt.datetime

    def __post_init__(self) -> None:
        if self.kind not in SUBJECT_KINDS:
            raise ValueError(f"find a subject by {', '.join(SUBJECT_KINDS)}")
        if not self.value.strip():
            raise ValueError("give the value to look for")
        if self.since >= self.until:
            raise ValueError("the time window is empty: since must be before until")


@dataclass(frozen=True)
class RequestOutcome:
    request: SubjectRequestRecord
    sessions: list[SessionRecord]
    """The subject's sessions as they were found (before any change)."""
    export: dict[str, Any] | None
    """For access and export requests: the subject export document."""
    report: dict[str, Any]
    """For the controller's files: what was done, by id only."""


def authorise(role: str, permission: operators.Permission) -> None:
    try:
        allowed = operators.allowed(operators.Role(role), permission)
    except ValueError:
        allowed = False
    if not allowed:
        raise Forbidden(f"the role {role!r} may not do {permission.value}", permission.value)


class DataHandling:
    def __init__(
        self, store: SqlStore, clock: Clock | None = None, guard: operators.LoginGuard | None = None
    ) -> None:
        self.store = store
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.guard = guard or operators.LoginGuard()

    # --- retention and offboarding jobs ---------------------------------------------------------------

    async def run_retention(self, retention_days: int, actor: str = "job:retention") -> RetentionResult:
        now = self.clock()
        return await self.store.anonymise(retention_cutoff(now, retention_days), now, actor)

    async def run_offboarding(self, actor: str = "job:offboarding") -> list[str]:
        return await self.store.purge_controllers(self.clock(), actor)

    # --- data-subject requests ------------------------------------------------------------------------

    async def find_subject(self, controller_id: str, query: SubjectQuery, actor: str) -> list[SessionRecord]:
        """A search on its own (before deciding what to do); audited under a fresh search id."""
        return await self.store.find_subject(
            controller_id, query.kind, query.value, query.since, query.until, actor, self.clock(),
            object_id="search-" + secrets.token_hex(6),
        )

    async def handle_request(
        self, controller_id: str, kind: str, query: SubjectQuery, actor: str,
        received_at: dt.datetime | None = None, changes: Mapping[str, str | None] | None = None,
    ) -> RequestOutcome:
        """Record the request (deadline one month after `received_at`), find the subject's sessions,
        carry it out and complete it with an outcome report.

        access/export: the sessions, as a subject export. rectify: `changes` to name/phone/email.
        erase: the sessions are deleted. restrict: kept, but out of processing and telemetry.
        """
        if kind not in REQUEST_KINDS:
            raise ValueError(f"a request is one of {', '.join(REQUEST_KINDS)}")
        if kind == "rectify" and not changes:
            raise ValueError("say what to rectify: a new name, phone number or e-mail address")
        now = self.clock()
        received = received_at or now
        if received > now:
            raise ValueError("a request cannot be received in the future")
        request = await self.store.record_request(controller_id, kind, received, actor, now)
        found = await self.store.find_subject(
            controller_id, query.kind, query.value, query.since, query.until, actor, now, object_id=request.id
        )
        ids = [s.id for s in found]
        outcome: dict[str, Any] = {"sessions_found": len(ids), "searched_by": query.kind}
        export = None
        if kind in ("access", "export"):
            exported = await self.store.export_sessions(controller_id, ids, actor, now, request.id)
            outcome["sessions_exported"] = len(exported)
        elif kind == "rectify":
            assert changes is not None
            outcome["sessions_rectified"] = await self.store.rectify_sessions(
                controller_id, ids, changes, actor, now, request.id
            ) if ids else 0
            outcome["fields_changed"] = ",".join(sorted(changes))
        elif kind == "erase":
            outcome["sessions_erased"] = await self.store.erase_sessions(controller_id, ids, actor, now, request.id)
        else:
            outcome["sessions_restricted"] = await self.store.restrict_sessions(
                controller_id, ids, actor, now, request.id
            )
        if kind in ("rectify", "erase", "restrict") and ids:
            # Kept beside the keys, outside every backup: a restore replays it (metadata_store.backup).
            ledger = DeletionLedger(self.store.keys)
            ledger.record(kind, controller_id, ids, now, changes if kind == "rectify" else None)
        done = await self.store.complete_request(request.id, ids, outcome, actor, now)
        if kind in ("access", "export"):
            export = subject_export(done, exported, now)
        return RequestOutcome(request=done, sessions=found, export=export, report=request_report(done, now))

    async def overdue_requests(self) -> list[SubjectRequestRecord]:
        now = self.clock()
        return [r for r in await self.store.list_requests() if r.overdue(now)]

    # --- controllers ----------------------------------------------------------------------------------

    async def export_controller(self, controller_id: str, actor: str) -> dict[str, Any]:
        now = self.clock()
        return controller_export(await self.store.export_controller(controller_id, actor, now), now)

    async def offboard(self, controller_id: str, actor: str, grace_days: int | None = None) -> Any:
        """End the service. The data is deleted (and the key destroyed) after `grace_days`, or after
        one calendar month when not given; longer is refused (agreement art. 3.3)."""
        now = self.clock()
        if grace_days is None:
            delete_after = add_months(now, 1)
        else:
            if grace_days < 0:
                raise ValueError("the grace period cannot be negative")
            delete_after = now + dt.timedelta(days=grace_days)
        return await self.store.start_offboarding(controller_id, delete_after, actor, now)

    # --- backups --------------------------------------------------------------------------------------

    async def backup(self, out: Path, actor: str) -> BackupSummary:
        return await write_backup(self.store, out, self.clock(), actor)

    async def restore(self, path: Path, actor: str, retention_days: int) -> RestoreSummary:
        return await restore_backup(self.store, path, self.clock(), actor, retention_days)

    # --- audit ----------------------------------------------------------------------------------------

    async def verify_audit(
        self, expected_head: str | None = None, expected_count: int | None = None
    ) -> audit.VerifyResult:
        entries = await self.store.audit_entries_stored_order()
        return audit.verify(entries, expected_head, expected_count)

    async def audit_lines(self, actor: str) -> list[str]:
        """The log as JSON lines (an export for an auditor); the export itself is logged first."""
        await self.store.append_audit(actor, audit.Action.AUDIT_READ, "audit_log", self.clock())
        return [audit.entry_to_json(e) for e in await self.store.audit_entries()]

    # --- operators ------------------------------------------------------------------------------------

    async def add_operator(
        self, username: str, role: str, password: str, actor: str
    ) -> tuple[OperatorRecord, str]:
        """Create an account; returns it with the otpauth:// URI for the authenticator app (show once)."""
        if operators.Role(role) not in operators.MATRIX:
            raise ValueError(f"unknown role {role!r}")
        username = audit.validate_actor(username)
        if username.startswith(("api:", "job:")):
            raise ValueError("an operator's user name cannot start with api: or job:")
        problems = operators.check_password(password, username)
        if problems:
            raise ValueError(" ".join(problems))
        secret = secrets.token_bytes(20)
        record = OperatorRecord(
            username=username, role=role, password_hash=operators.hash_password(password, secrets.token_bytes(16)),
            totp_secret=secret, created_at=self.clock(),
        )
        await self.store.add_operator(record, actor, self.clock())
        return record, operators.provisioning_uri(secret, username)

    async def set_password(self, username: str, password: str, actor: str) -> None:
        problems = operators.check_password(password, username)
        if problems:
            raise ValueError(" ".join(problems))
        await self.store.update_operator(
            username, actor, self.clock(), password_hash=operators.hash_password(password, secrets.token_bytes(16))
        )

    async def sign_in(self, username: str, password: str, code: str, source: str) -> OperatorRecord:
        """Password and TOTP code, with lockout per account and per source. Every outcome is audited
        (the source address is not: it stays in the in-memory lockout counter only)."""
        now = self.clock()
        clock = now.timestamp()
        lock = self.guard.check(username, source, clock)
        if lock is not None:
            raise SignInFailed("Too many failed attempts; try again later.", retry_after=lock.until - clock)
        record = await self.store.get_operator(username)
        ok = (
            record is not None
            and record.disabled_at is None
            and operators.verify_password(password, record.password_hash)
        )
        step = operators.verify_totp(record.totp_secret, code, clock, last_used_step=record.totp_last_step) \
            if ok and record is not None else None
        if record is None or step is None or not await self.store.use_totp_step(record.username, step):
            if record is None:  # spend the same time as a real check, so timing does not reveal names
                operators.verify_password(password, _dummy_hash())
            self.guard.record_failure(username, source, clock)
            safe_actor = record.username if record is not None else "unknown-operator"
            await self.store.append_audit(safe_actor, audit.Action.OPERATOR_LOGIN_FAILED, "admin", now)
            raise SignInFailed()
        self.guard.record_success(username, source, clock)
        await self.store.append_audit(record.username, audit.Action.OPERATOR_LOGIN, "admin", now)
        return record

    # --- controller API keys --------------------------------------------------------------------------

    async def create_api_key(self, controller_id: str, label: str, actor: str) -> tuple[ApiKeyRecord, str]:
        """A new key for the controller's systems; the full key is returned once and only its hash kept."""
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        label = " ".join(label.split())[:100] or "API key"
        record = await self.store.add_api_key(
            key_id, controller_id, hashlib.sha256(secret.encode()).hexdigest(), label, actor, self.clock()
        )
        return record, f"{API_KEY_PREFIX}{key_id}_{secret}"

    async def check_api_key(self, presented: str) -> ApiKeyRecord | None:
        """The key's record when `presented` is a live key of an active controller, else None."""
        if not presented.startswith(API_KEY_PREFIX):
            return None
        key_id, _, secret = presented[len(API_KEY_PREFIX):].partition("_")
        if not key_id or not secret or len(presented) > 200:
            return None
        found = await self.store.api_key(key_id)
        digest = hashlib.sha256(secret.encode()).hexdigest()
        if found is None:
            hmac.compare_digest(digest, digest)  # the same work either way
            return None
        record, stored = found
        if not hmac.compare_digest(digest, stored) or record.revoked_at is not None:
            return None
        controller = await self.store.get_controller(record.controller_id)
        if controller is None or controller.status != "active":
            return None
        return record

    # --- breaches -------------------------------------------------------------------------------------

    async def save_breach(self, breach: breaches.Breach, actor: str) -> breaches.Breach:
        await self.store.save_breach(
            breach.id, breach.discovered_at, breaches.breach_to_json(breach), actor, self.clock()
        )
        return breach

    async def get_breach(self, breach_id: str) -> breaches.Breach:
        row = await self.store.get_breach(breach_id)
        if row is None:
            raise NotFound(f"there is no breach {breach_id!r}")
        return breaches.breach_from_json(row.document)

    async def list_breaches(self) -> list[breaches.Breach]:
        return [breaches.breach_from_json(r.document) for r in await self.store.list_breaches()]

    async def update_breach(self, breach_id: str, changes: Mapping[str, Any], actor: str) -> breaches.Breach:
        """Change the fields given (id, discovery time, notification and closing times stay)."""
        current = await self.get_breach(breach_id)
        return await self.save_breach(breaches.breach_from_input(changes, current), actor)

    async def record_breach(self, document: Mapping[str, Any], actor: str) -> breaches.Breach:
        """A new breach from an operator's fields (missing ones empty; discovered now unless given)."""
        if await self.store.get_breach(str(document.get("id", ""))) is not None:
            raise Conflict(f"there is already a breach {document.get('id')!r}")
        fields = {"discovered_at": self.clock().isoformat(), **document}
        return await self.save_breach(breaches.breach_from_input(fields), actor)

    async def mark_notified(self, breach_id: str, controller_id: str, actor: str) -> breaches.Breach:
        """Refused (BreachIncomplete, naming the fields) while a required field is missing."""
        breach = breaches.mark_notified(await self.get_breach(breach_id), controller_id, self.clock())
        await self.store.save_breach(
            breach.id, breach.discovered_at, breaches.breach_to_json(breach), actor, self.clock()
        )
        await self.store.append_audit(actor, audit.Action.BREACH_NOTIFY, f"breach:{breach_id}", self.clock())
        return breach

    async def close_breach(self, breach_id: str, note: str, actor: str) -> breaches.Breach:
        breach = breaches.close(await self.get_breach(breach_id), self.clock(), note)
        return await self.save_breach(breach, actor)

    async def overdue_breaches(self) -> list[breaches.Breach]:
        return breaches.overdue(await self.list_breaches(), self.clock())


@functools.cache
def _dummy_hash() -> str:
    """A real scrypt hash to check unknown names against, so their answer takes as long (made on first use)."""
    return operators.hash_password("kijkmee-no-such-operator", b"\x00" * 16)

__all__ = [
    "Conflict", "DataHandling", "Forbidden", "NotFound", "RequestOutcome", "SignInFailed", "SubjectQuery", "authorise",
]
