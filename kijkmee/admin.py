"""`kijkmee admin`: the store's data-handling commands for operators on the machine.

Every command acts as a named operator account (`--as`, or KIJKMEE_OPERATOR, or the login name) whose
role must allow it (the same matrix as the admin API) and is written to the audit log under that name.
The one exception is `operator add` while no account exists yet: that makes the first admin.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import json
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from kijkmee.config import ConfigError, ServeConfig, load_config
from kijkmee.storage import open_store, processor_info, register_settings
from metadata_store import breaches, register
from metadata_store.exports import request_report_markdown
from metadata_store.operators import Permission as P
from metadata_store.operators import Role
from metadata_store.service import DataHandling, SubjectQuery, authorise
from metadata_store.sql import SqlStore
from metadata_store.store import StoreError

DESCRIPTION = """\
Data handling for the processor's operators: retention, data-subject requests, controller export
and offboarding, the audit log, operator accounts, breaches, the register of processing, backups.
Each command names the article of the agreement or the GDPR it serves; see README, "Data handling".

Which store: the same options as `kijkmee serve` (--config, KIJKMEE_DATA_DIR, KIJKMEE_DATABASE_URL,
KIJKMEE_KEY_DIR). Who: --as NAME (or KIJKMEE_OPERATOR, else your login name) must be an operator
account whose role allows the command; it is recorded in the audit log."""

Handler = Callable[["Context", argparse.Namespace], Coroutine[Any, Any, int]]


class Context:
    def __init__(self, config: ServeConfig, store: SqlStore, actor: str) -> None:
        self.config = config
        self.store = store
        self.actor = actor
        self.service = DataHandling(store)

    async def require(self, permission: P) -> None:
        record = await self.store.get_operator(self.actor)
        if record is None or record.disabled_at is not None:
            raise StoreError(
                f"there is no enabled operator account {self.actor!r}; give --as NAME of an operator"
                " (make the first one with: kijkmee admin operator add NAME --role admin)"
            )
        try:
            authorise(record.role, permission)
        except StoreError:
            # Refusals are traced too (annex 2): who tried what.
            await self.store.append_audit(self.actor, "access.denied", f"permission:{permission.value}",
                                          dt.datetime.now(dt.UTC))
            raise


def _time(text: str) -> dt.datetime:
    """ISO 8601 date or time; a date means its start, UTC; a time without zone is UTC."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (2026-11-28) or time (2026-11-28T14:00)") from None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _write(document: Any, out: Path | None, markdown: str | None = None) -> None:
    text = markdown if markdown is not None else json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it may hold personal data
    os.fchmod(fd, 0o600)  # the mode above applies only to a new file; an existing one keeps its own
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    print(f"written to {out}", file=sys.stderr)


# --- commands -----------------------------------------------------------------------------------------


async def retention_run(ctx: Context, args: argparse.Namespace) -> int:
    await ctx.require(P.RETENTION_RUN)
    result = await ctx.service.run_retention(ctx.config.retention_days, actor=ctx.actor)
    deleted = await ctx.service.run_offboarding(actor=ctx.actor)
    print(f"anonymised {result.anonymised} sessions that joined before {result.cutoff.isoformat()}"
          f" ({result.visits} anonymous visits kept, {result.rooms_removed} expired rooms removed)")
    if deleted:
        print("deleted controllers whose grace period ended: " + ", ".join(deleted))
    return 0


def _query(args: argparse.Namespace) -> SubjectQuery:
    given = [(k, getattr(args, k)) for k in ("name", "phone", "email", "ip") if getattr(args, k) is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of --name, --phone, --email, --ip")
    until = args.until or dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    since = args.since or until - dt.timedelta(days=100)
    return SubjectQuery(given[0][0], given[0][1], since, until)


async def subject_find(ctx: Context, args: argparse.Namespace) -> int:
    await ctx.require(P.SUBJECTS_SEARCH)
    found = await ctx.service.find_subject(args.controller, _query(args), ctx.actor)
    for s in found:
        print(f"session {s.id}  room {s.room_id}  joined {s.joined_at.isoformat()}"
              + ("  (restricted)" if s.restricted_at else ""))
    print(f"{len(found)} session(s) found", file=sys.stderr)
    return 0


_REQUEST_PERMISSION = {
    "access": P.SUBJECTS_EXPORT, "export": P.SUBJECTS_EXPORT, "rectify": P.SUBJECTS_RECTIFY,
    "erase": P.SUBJECTS_ERASE, "restrict": P.SUBJECTS_RESTRICT,
}


async def subject_request(ctx: Context, args: argparse.Namespace) -> int:
    await ctx.require(_REQUEST_PERMISSION[args.kind])
    changes: dict[str, str | None] = {}
    for field in ("name", "phone", "email"):
        value = getattr(args, f"set_{field}", None)
        if value is not None:
            changes[field] = value or None
    outcome = await ctx.service.handle_request(
        args.controller, args.kind, _query(args), ctx.actor, received_at=args.received_at, changes=changes or None
    )
    if outcome.export is not None:
        _write(outcome.export, args.out)
    if args.report is not None:
        _write(outcome.report, args.report,
               None if args.report.suffix == ".json" else request_report_markdown(outcome.report))
    print(f"request {outcome.request.id} ({args.kind}) completed: {len(outcome.sessions)} session(s); "
          f"deadline was {outcome.request.deadline.date().isoformat()}", file=sys.stderr)
    return 0


async def requests_list(ctx: Context, args: argparse.Namespace) -> int:
    await ctx.require(P.SUBJECTS_SEARCH)
    now = dt.datetime.now(dt.UTC)
    rows = await ctx.store.list_requests(args.controller)
    late = 0
    for r in rows:
        state = "done" if r.completed_at else ("OVERDUE" if r.overdue(now) else "open")
        late += r.overdue(now)
        print(f"{r.id}  {r.controller_id}  {r.kind:8}  received {r.received_at.date()}  deadline {r.deadline.date()}"
              f"  {state}")
    if late:
        print(f"{late} request(s) past their one-month deadline", file=sys.stderr)
    return 1 if late else 0


async def controller_add(ctx: Context, args: argparse.Namespace) -> int:
    await ctx.require(P.OPERATORS_MANAGE)
    record = await ctx.store.ensure_controller(args.id, args.name, dt.datetime.now(dt.UTC))
    print(f"controller {record.id} ({record.name}): {record.status}")
    return 0


async def controller_list(ctx: Context, args: argparse.Namespace) -> int:
    await ctx.require(P.REGISTER_READ)
    for c in await ctx.store.list_controllers():
        extra = f"  deleted {c.deleted_at:%Y-%m-%d}" if c.deleted_at else (
            f"  data deleted after {c.delete_after:%Y-%m-%d %H:%M} UTC" if c.delete_after else "")
        print(f"{c.id}  {c.status}  {c.name}{extra}")
    return 0


async def controller_export(ctx: Context, args: argparse.Namespace) -> int:
    await ctx.require(P.CONTROLLERS_EXPORT)
    _write(await ctx.service.export_controller(args.id, ctx.actor), args.out)
    return 0


async def controller_offboard(ctx: Context, args: argparse.Namespace) -> int:
    await ctx.require(P.CONTROLLERS_OFFBOARD)
    record = await ctx.service.offboard(args.id, ctx.actor, args.grace_days)
    print(f"controller {record.id} is ending its service: everything of it is deleted and its key destroyed "
          f"after {record.delete_after:%Y-%m-%d %H:%M} UTC (export it before then: kijkmee admin controller export)")
    return 0


async def apikey_create(ctx: Context, args: argparse.Namespace) -> int:
    await ctx.require(P.OPERATORS_MANAGE)
    record, key = await ctx.service.create_api_key(args.controller, args.label or "", ctx.actor)
    print(f"API key {record.id} for controller {record.controller_id} ({record.label}). Give this to the"
          " controller now; it is shown only once and kijkmee keeps only a hash:", file=sys.stderr)
    print(key)
    return 0


async def apikey_list(ctx: Context, args: argparse.Namespace) -> int:
    await ctx.require(P.OPERATORS_MANAGE)
    for k in await ctx.store.list_api_keys(args.controller):
        state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
        print(f"{k.id}  {k.controller_id}  {state}  created {k.created_at:%Y-%m-%d}  {k.label}")
    return 0


async def apikey_revoke(ctx: Context, args: argparse.Namespace) -> int:
    await ctx.require(P.OPERATORS_MANAGE)
    await ctx.store.revoke_api_key(args.id, ctx.actor, dt.datetime.now(dt.UTC))
    print(f"API key {args.id} revoked: it stops working now")
    return 0


async def audit_verify(ctx: Context, args: argparse.Namespace) -> int:
    await ctx.require(P.AUDIT_VERIFY)
    result = await ctx.service.verify_audit(args.head, args.count)
    print(("OK: " if result.ok else "TAMPERED: ") + result.detail)
    print(f"head {result.head} ({result.entries_checked} entries): keep it elsewhere to detect truncation later")
    return 0 if result.ok else 1


async def audit_export(ctx: Context, args: argparse.Namespace) -> int:
    await ctx.require(P.AUDIT_READ)
    lines = await ctx.service.audit_lines(ctx.actor)
    _write(None, args.out, "".join(line + "\n" for line in lines))
    return 0


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("New password (at least 12 characters): ")
    if getpass.getpass("Once more: ") != first:
        raise ValueError("the two passwords differ")
    return first


async def operator_add(ctx: Context, args: argparse.Namespace) -> int:
    if await ctx.store.list_operators():
        await ctx.require(P.OPERATORS_MANAGE)
        actor = ctx.actor
    elif args.role != Role.ADMIN.value:
        raise ValueError("the first operator must be an admin (--role admin)")
    else:
        actor = args.username  # bootstrap: the first admin creates itself
    record, uri = await ctx.service.add_operator(args.username, args.role, _read_password(args), actor)
    print(f"operator {record.username} ({record.role}) created.")
    print("Add this to an authenticator app now; it is shown only once:")
    print(uri)
    return 0


async def operator_list(ctx: Context, args: argparse.Namespace) -> int:
    await ctx.require(P.OPERATORS_MANAGE)
    for o in await ctx.store.list_operators():
        print(f"{o.username}  {o.role}" + ("  disabled" if o.disabled_at else ""))
    return 0


async def operator_change(ctx: Context, args: argparse.Namespace) -> int:
    await ctx.require(P.OPERATORS_MANAGE)
    now = dt.datetime.now(dt.UTC)
    if args.action == "disable":
        await ctx.store.update_operator(args.username, ctx.actor, now, disabled=True)
    elif args.action == "enable":
        await ctx.store.update_operator(args.username, ctx.actor, now, disabled=False)
    elif args.action == "set-role":
        await ctx.store.update_operator(args.username, ctx.actor, now, role=Role(args.role).value)
    else:
        await ctx.service.set_password(args.username, _read_password(args), ctx.actor)
    print(f"operator {args.username}: {args.action} done")
    return 0


def _breach_from_args(args: argparse.Namespace) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(Path(args.file).read_text(encoding="utf-8")) if args.file else {}
    if not isinstance(document, dict):
        raise ValueError("the breach file must hold one JSON object")
    if args.id:
        document["id"] = args.id
    if args.discovered_at:
        document["discovered_at"] = args.discovered_at.isoformat()
    return document


async def breach_save(ctx: Context, args: argparse.Namespace) -> int:
    await ctx.require(P.BREACHES_WRITE)
    document = _breach_from_args(args)
    existing = await ctx.store.get_breach(str(document.get("id", "")))
    if existing is None:
        breach = await ctx.service.record_breach(document, ctx.actor)
    else:
        breach = await ctx.service.update_breach(existing.id, document, ctx.actor)
    missing = breaches.missing_fields(breach)
    print(f"breach {breach.id} saved; controllers must be told before "
          f"{breaches.deadline(breach):%Y-%m-%d %H:%M} UTC (48 hours after discovery)")
    if missing:
        print("still missing before anyone can be notified: " + ", ".join(missing))
    return 0


async def breach_list(ctx: Context, args: argparse.Namespace) -> int:
    await ctx.require(P.BREACHES_READ)
    now = dt.datetime.now(dt.UTC)
    items = await ctx.service.list_breaches()
    late = {b.id for b in breaches.overdue(items, now)}
    for b in items:
        flag = "  OVERDUE: " + ", ".join(breaches.pending_controllers(b)) if b.id in late else ""
        print(f"{b.id}  {b.status.value}  discovered {b.discovered_at:%Y-%m-%d %H:%M} UTC"
              f"  deadline {breaches.deadline(b):%Y-%m-%d %H:%M} UTC{flag}")
    if late:
        print(f"{len(late)} breach(es) not reported to every controller within 48 hours", file=sys.stderr)
    return 1 if late else 0


async def breach_notify(ctx: Context, args: argparse.Namespace) -> int:
    await ctx.require(P.BREACHES_NOTIFY)
    breach = await ctx.service.get_breach(args.id)
    markdown, document = breaches.notification_document(breach, args.controller, processor_info(ctx.config))
    if args.out is not None:
        _write(document, args.out.with_suffix(".json"))
        _write(None, args.out.with_suffix(".md"), markdown)
    else:
        sys.stdout.write(markdown)
    if args.sent:
        await ctx.service.mark_notified(args.id, args.controller, ctx.actor)
        print(f"breach {args.id}: controller {args.controller} marked as notified", file=sys.stderr)
    return 0


async def breach_close(ctx: Context, args: argparse.Namespace) -> int:
    await ctx.require(P.BREACHES_WRITE)
    await ctx.service.close_breach(args.id, args.note or "", ctx.actor)
    print(f"breach {args.id} closed")
    return 0


async def register_show(ctx: Context, args: argparse.Namespace) -> int:
    await ctx.require(P.REGISTER_READ)
    controllers = [
        register.ControllerInfo(id=c.id, name=c.name) for c in await ctx.store.list_controllers()
        if c.status != "deleted"
    ]
    settings = register_settings(ctx.config)
    reg = register.build_register(processor=processor_info(ctx.config), controllers=controllers, settings=settings)
    if args.format == "json":
        _write(reg, args.out)
    else:
        _write(None, args.out, register.register_markdown(reg))
    return 0


async def backup_run(ctx: Context, args: argparse.Namespace) -> int:
    await ctx.require(P.BACKUP_RUN)
    out = args.out or ctx.config.data_dir / "backups" / f"kijkmee-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.backup"
    summary = await ctx.service.backup(out, ctx.actor)
    rows = sum(summary.counts.values())
    print(f"backup written to {summary.path} ({rows} rows, encrypted; the keys stay in {ctx.store.keys.folder})")
    return 0


async def backup_restore(ctx: Context, args: argparse.Namespace) -> int:
    if await ctx.store.list_operators():
        await ctx.require(P.BACKUP_RESTORE)
    summary = await ctx.service.restore(args.file, ctx.actor, ctx.config.retention_days)
    print(f"restored {sum(summary.counts.values())} rows; replayed {summary.replayed} erasure/rectification/"
          f"restriction(s) from the deletion ledger; anonymised {summary.anonymised} session(s) past retention"
          + (f"; deleted data of controllers without a key: {', '.join(summary.controllers_purged)}"
             if summary.controllers_purged else ""))
    return 0


# --- parser -------------------------------------------------------------------------------------------


def _subject_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--controller", required=True, help="the controller whose data subject this is")
    who = parser.add_argument_group("who (exactly one)")
    who.add_argument("--name", help="the name the person typed (case and spaces do not matter)")
    who.add_argument("--phone", help="the phone number the person typed (06-..., +31 6 ..., 0031 6 ... all match)")
    who.add_argument("--email", help="the e-mail address the person typed")
    who.add_argument("--ip", help="the IP address they joined from")
    parser.add_argument("--since", type=_time, help="start of the time window (default: 100 days before --until)")
    parser.add_argument("--until", type=_time, help="end of the time window (default: now)")


ACTION_HELP = {
    "disable": "disable an account (its sessions end at once)",
    "enable": "enable a disabled account again",
    "set-role": "give an account another role",
    "set-password": "set a new password (reads it from stdin when not a terminal)",
}


def add_admin_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML config file (as for serve)")
    parser.add_argument("--data-dir", type=Path, help="the data folder of serve (default kijkmee-data)")
    parser.add_argument("--key-dir", type=Path, help="the key folder (default DATA_DIR-keys, beside the data folder)")
    parser.add_argument("--as", dest="actor", metavar="NAME",
                        help="operator account to act as (default: KIJKMEE_OPERATOR, else your login name)")
    commands = parser.add_subparsers(dest="admin_command", metavar="COMMAND", required=True)

    retention = commands.add_parser("retention", help="art. 5.3: anonymise sessions past the retention period")
    retention.add_subparsers(dest="sub", required=True).add_parser(
        "run", help="anonymise now and delete controllers whose grace period ended"
    ).set_defaults(handler=retention_run)

    subject = commands.add_parser("subject", help="art. 15-18, 20: find, export, rectify, erase or restrict")
    subs = subject.add_subparsers(dest="sub", required=True)
    find = subs.add_parser("find", help="list a data subject's sessions")
    _subject_options(find)
    find.set_defaults(handler=subject_find)
    for kind, words in (("access", "art. 15: export what is stored about the subject"),
                        ("export", "art. 20: the same, for moving it elsewhere"),
                        ("rectify", "art. 16: correct a typed name, phone number or e-mail address"),
                        ("erase", "art. 17: delete the subject's sessions"),
                        ("restrict", "art. 18: keep, but take out of processing and telemetry")):
        sub = subs.add_parser(kind, help=words, description=words)
        _subject_options(sub)
        sub.add_argument("--received-at", type=_time, help="when the controller received the request (default now):"
                         " the one-month deadline counts from here")
        sub.add_argument("--report", type=Path, help="write the outcome report for the controller (.md or .json)")
        if kind in ("access", "export"):
            sub.add_argument("--out", type=Path, help="write the export here (0600) instead of to stdout")
        if kind == "rectify":
            sub.add_argument("--set-name", help="the corrected name ('' clears it)")
            sub.add_argument("--set-phone", help="the corrected phone number ('' clears it)")
            sub.add_argument("--set-email", help="the corrected e-mail address ('' clears it)")
        sub.set_defaults(handler=subject_request, kind=kind, out=None)

    requests = commands.add_parser("requests", help="data-subject requests and their deadlines")
    listing = requests.add_subparsers(dest="sub", required=True).add_parser(
        "list", help="every request; exit status 1 when one is overdue")
    listing.add_argument("--controller", help="only this controller's requests")
    listing.set_defaults(handler=requests_list)

    controller = commands.add_parser("controller", help="art. 2.3, 3.3: controllers, export and offboarding")
    subs = controller.add_subparsers(dest="sub", required=True)
    add = subs.add_parser("add", help="add a controller (and its data key)")
    add.add_argument("id", help="short id: lowercase letters, digits and dashes (e.g. acme)")
    add.add_argument("--name", required=True)
    add.set_defaults(handler=controller_add)
    subs.add_parser("list", help="controllers and their status").set_defaults(handler=controller_list)
    export = subs.add_parser("export", help="all of a controller's personal data as JSON")
    export.add_argument("id", help="the controller's id")
    export.add_argument("--out", type=Path, help="write the JSON here (0600) instead of to stdout")
    export.set_defaults(handler=controller_export)
    offboard = subs.add_parser("offboard", help="end the service: delete everything after a grace period")
    offboard.add_argument("id", help="the controller's id")
    offboard.add_argument("--grace-days", type=int, help="days until deletion (default: one calendar month, the most)")
    offboard.set_defaults(handler=controller_offboard)

    apikey = commands.add_parser("apikey", help="API keys for a controller's systems (/api/v1)")
    subs = apikey.add_subparsers(dest="sub", required=True)
    create = subs.add_parser("create", help="make a key; it is printed once, only its hash is kept")
    create.add_argument("--controller", required=True, help="the controller the key acts for")
    create.add_argument("--label", help="what it is for, e.g. 'webshop'")
    create.set_defaults(handler=apikey_create)
    keys_list = subs.add_parser("list", help="keys and whether they are active")
    keys_list.add_argument("--controller", help="only this controller's keys")
    keys_list.set_defaults(handler=apikey_list)
    revoke = subs.add_parser("revoke", help="stop a key working, at once")
    revoke.add_argument("id", help="the key's id (the part after kmk_, before the next _)")
    revoke.set_defaults(handler=apikey_revoke)

    audit_parser = commands.add_parser("audit", help="annex 2: the hash-chained audit log")
    subs = audit_parser.add_subparsers(dest="sub", required=True)
    verify = subs.add_parser("verify", help="check the chain; with --head/--count also that nothing was cut off")
    verify.add_argument("--head", help="a head hash exported earlier")
    verify.add_argument("--count", type=int, help="how many entries the log had when --head was exported")
    verify.set_defaults(handler=audit_verify)
    dump = subs.add_parser("export", help="the log as JSON lines")
    dump.add_argument("--out", type=Path, help="write the JSON lines here (0600) instead of to stdout")
    dump.set_defaults(handler=audit_export)

    operator = commands.add_parser("operator", help="annex 2: operator accounts (password + TOTP, roles)")
    subs = operator.add_subparsers(dest="sub", required=True)
    add = subs.add_parser("add", help="create an account; reads the password from stdin when not a terminal")
    add.add_argument("username", help="the operator's user name, as the audit log will show it")
    add.add_argument("--role", required=True, choices=[r.value for r in Role],
                            help="viewer, privacy_officer, admin or auditor (README: who may do what)")
    add.add_argument("--password-stdin", action="store_true",
                            help="read the password from the first line of stdin instead of asking")
    add.set_defaults(handler=operator_add)
    subs.add_parser("list", help="accounts and roles").set_defaults(handler=operator_list)
    for action in ("disable", "enable", "set-role", "set-password"):
        change = subs.add_parser(action, help=ACTION_HELP[action])
        change.add_argument("username", help="the operator's user name")
        if action == "set-role":
            change.add_argument("--role", required=True, choices=[r.value for r in Role],
                            help="viewer, privacy_officer, admin or auditor (README: who may do what)")
        if action == "set-password":
            change.add_argument("--password-stdin", action="store_true",
                            help="read the password from the first line of stdin instead of asking")
        change.set_defaults(handler=operator_change, action=action)

    breach = commands.add_parser("breach", help="art. 7 / GDPR art. 33: the breach register (48 hours)")
    subs = breach.add_subparsers(dest="sub", required=True)
    save = subs.add_parser("save", help="record or update a breach from a JSON file (AP form fields)")
    save.add_argument("--file", type=Path, help="JSON with the breach's fields (see README)")
    save.add_argument("--id", help="the breach's reference (overrides the file's id)")
    save.add_argument("--discovered-at", type=_time,
                      help="when it was discovered (default now): the 48 hours start here")
    save.set_defaults(handler=breach_save)
    subs.add_parser("list", help="breaches; exit status 1 when one is overdue").set_defaults(handler=breach_list)
    notify = subs.add_parser("notify", help="the notification for one controller (Markdown and JSON)")
    notify.add_argument("id", help="the breach's reference")
    notify.add_argument("--controller", required=True)
    notify.add_argument("--out", type=Path, help="write OUT.md and OUT.json")
    notify.add_argument("--sent", action="store_true", help="also record that it was sent now")
    notify.set_defaults(handler=breach_notify)
    close = subs.add_parser("close", help="close a handled breach")
    close.add_argument("id", help="the breach's reference")
    close.add_argument("--note", help="why (required when closed without notifying)")
    close.set_defaults(handler=breach_close)

    backup = commands.add_parser("backup", help="annex 2: encrypted backups and a restore that keeps erasures")
    subs = backup.add_subparsers(dest="sub", required=True)
    run = subs.add_parser("run", help="write an encrypted snapshot (default DATA_DIR/backups/kijkmee-<time>.backup)")
    run.add_argument("--out", type=Path, help="where to write the backup (0600)")
    run.set_defaults(handler=backup_run)
    restore = subs.add_parser(
        "restore", help="restore into a NEW, empty data folder or database, with the same key folder",
        description="Restore a backup into a new, empty store (point --data-dir or KIJKMEE_DATABASE_URL at it) "
        "using the key folder the backup was made with (--key-dir). Afterwards the deletion ledger is replayed, "
        "so erased subjects stay erased, and sessions past retention are anonymised.")
    restore.add_argument("file", type=Path, help="a backup written by backup run")
    restore.set_defaults(handler=backup_restore)

    reg = commands.add_parser("register", help="GDPR art. 30(2): the register of processing")
    reg.add_argument("--format", choices=("md", "json"), default="md", help="Markdown for people, JSON for tools")
    reg.add_argument("--out", type=Path, help="write it here instead of to stdout")
    reg.set_defaults(handler=register_show)


def run_admin_command(args: argparse.Namespace) -> int:
    flags = {k: v for k, v in (("data_dir", args.data_dir), ("key_dir", args.key_dir)) if v is not None}
    config_file = args.config or (Path(os.environ["KIJKMEE_CONFIG"]) if os.environ.get("KIJKMEE_CONFIG") else None)
    try:
        config = load_config(ServeConfig, file=config_file, env=os.environ, flags=flags)
    except ConfigError as exc:
        print(f"kijkmee admin: configuration error: {exc}", file=sys.stderr)
        return 2
    actor = args.actor or os.environ.get("KIJKMEE_OPERATOR") or getpass.getuser()

    async def run() -> int:
        store = await open_store(config)
        try:
            handler: Handler = args.handler
            return await handler(Context(config, store, actor), args)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except (StoreError, ValueError, breaches.BreachError, register.RegisterError) as exc:
        print(f"kijkmee admin: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"kijkmee admin: {exc.strerror or exc}", file=sys.stderr)
        return 1


__all__ = ["DESCRIPTION", "add_admin_arguments", "run_admin_command"]
