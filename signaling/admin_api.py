"""The admin HTTP API under /admin/api: the same data handling as `kijkmee admin`, for operators.

Sign-in takes a user name, password and TOTP code (lockout per account and per source) and sets a
session cookie that is Secure, HttpOnly and SameSite=Strict, scoped to /admin. Every request after that
re-reads the operator (a disabled account or changed role takes effect at once), every unsafe method
needs the session's CSRF token in `X-CSRF-Token` and, when the browser sends one, our own Origin.
Each route names one permission of the authorisation matrix (`ROUTES`, data in code), and a test
walks every route x role pair against it.

Sessions live in this process's memory (30 minutes idle, 12 hours at most); a restart signs everyone
out. Nothing here logs a name, address or value: errors carry the error's type only.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from metadata_store import breaches, register
from metadata_store.exports import iso, request_json, session_json
from metadata_store.operators import Permission as P
from metadata_store.operators import Role
from metadata_store.service import DataHandling, Forbidden, SignInFailed, SubjectQuery, authorise
from metadata_store.store import Conflict, NotFound, StoreError

COOKIE = "kijkmee_admin"
IDLE = 30 * 60
MAX_AGE = 12 * 3600
MAX_BODY = 64 * 1024

ADMIN_KEY: web.AppKey[DataHandling] = web.AppKey("admin", DataHandling)
SESSIONS_KEY: web.AppKey[dict[str, AdminSession]] = web.AppKey("admin_sessions", dict)
PROCESSOR_KEY: web.AppKey[register.ProcessorInfo] = web.AppKey("processor", register.ProcessorInfo)
RETENTION_KEY: web.AppKey[int] = web.AppKey("retention_days", int)
BACKUP_DIR_KEY: web.AppKey[Path | None] = web.AppKey("backup_dir")
REGISTER_SETTINGS_KEY: web.AppKey[register.RegisterSettings] = web.AppKey("register", register.RegisterSettings)


@dataclass
class AdminSession:
    username: str
    csrf: str
    created: float
    seen: float


@dataclass(frozen=True)
class Caller:
    username: str
    role: str


Handler = Callable[[web.Request, Caller], Awaitable[web.StreamResponse]]


def _error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": code, "message": message, **extra}, status=status,
                             headers={"Cache-Control": "no-store"})


def _ok(document: Any, status: int = 200) -> web.Response:
    return web.json_response(document, status=status, headers={"Cache-Control": "no-store"})


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ValueError("the request body is too large")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise ValueError("the request body is too large")
    if not raw:
        return {}
    try:
        document = json.loads(raw)
    except ValueError:
        raise ValueError("the request body is not JSON") from None
    if not isinstance(document, dict):
        raise ValueError("the request body must be a JSON object")
    return document


def _time(value: Any, name: str, default: dt.datetime | None = None) -> dt.datetime:
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        raise ValueError(f"{name} must be an ISO 8601 time")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name} must be an ISO 8601 time") from None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def _text(document: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = document.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} is required text")
    return value


# --- session handling ---------------------------------------------------------------------------------


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    return origin is None or origin.rstrip("/") == f"{request.scheme}://{request.host}"


async def sign_in(request: web.Request) -> web.StreamResponse:
    if not _same_origin(request):
        return _error(403, "bad-origin", "Sign in from this site only.")
    admin = request.app[ADMIN_KEY]
    try:
        body = await _body(request)
        username, password, code = (_text(body, k) for k in ("username", "password", "code"))
    except ValueError as exc:
        return _error(400, "bad-request", str(exc))
    source = request.remote or "unknown"
    try:
        record = await admin.sign_in(username or "", password or "", code or "", source)
    except SignInFailed as exc:
        if exc.retry_after is not None:
            return _error(429, "locked", str(exc), retry_after=int(exc.retry_after) + 1)
        return _error(401, "sign-in-failed", str(exc))
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = time.monotonic()
    sessions = request.app[SESSIONS_KEY]
    sessions[token] = AdminSession(record.username, csrf, now, now)
    response = _ok({"username": record.username, "role": record.role, "csrf_token": csrf})
    response.set_cookie(COOKIE, token, secure=True, httponly=True, samesite="Strict", path="/admin", max_age=MAX_AGE)
    return response


def _session(request: web.Request) -> tuple[str, AdminSession] | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    sessions = request.app[SESSIONS_KEY]
    session = sessions.get(token)
    now = time.monotonic()
    if session is None or now - session.seen > IDLE or now - session.created > MAX_AGE:
        sessions.pop(token, None)
        return None
    session.seen = now
    return token, session


async def sign_out(request: web.Request) -> web.StreamResponse:
    found = _session(request)
    if found is not None:
        if not hmac.compare_digest(request.headers.get("X-CSRF-Token", ""), found[1].csrf):
            return _error(403, "csrf", "The request lacks this session's CSRF token.")
        request.app[SESSIONS_KEY].pop(found[0], None)
    response = _ok({})
    response.del_cookie(COOKIE, path="/admin")
    return response


def guarded(permission: P | None, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Sign-in, CSRF and Origin checks, then the matrix; `permission` None: any signed-in operator."""

    async def run(request: web.Request) -> web.StreamResponse:
        found = _session(request)
        if found is None:
            return _error(401, "not-signed-in", "Sign in first.")
        _, session = found
        if request.method not in ("GET", "HEAD"):
            if not _same_origin(request):
                return _error(403, "bad-origin", "Requests must come from this site.")
            if not hmac.compare_digest(request.headers.get("X-CSRF-Token", ""), session.csrf):
                return _error(403, "csrf", "The request lacks this session's CSRF token.")
        admin = request.app[ADMIN_KEY]
        record = await admin.store.get_operator(session.username)
        if record is None or record.disabled_at is not None:
            return _error(401, "not-signed-in", "This account is disabled; sign in again.")
        caller = Caller(record.username, record.role)
        try:
            if permission is not None:
                authorise(caller.role, permission)
            return await handler(request, caller)
        except Forbidden as exc:
            # Refusals are traced too (annex 2): who tried what, never with which values.
            await admin.store.append_audit(caller.username, "access.denied", f"permission:{exc.permission}",
                                           admin.clock())
            return _error(403, "forbidden", str(exc))
        except NotFound as exc:
            return _error(404, "not-found", str(exc))
        except Conflict as exc:
            return _error(409, "conflict", str(exc))
        except breaches.BreachIncomplete as exc:
            return _error(422, "incomplete", str(exc), missing=exc.missing)
        except (ValueError, StoreError, breaches.BreachError, register.RegisterError) as exc:
            return _error(400, "bad-request", str(exc))

    return run


# --- handlers -----------------------------------------------------------------------------------------


async def me(request: web.Request, caller: Caller) -> web.StreamResponse:
    permissions = sorted(p.value for p in P if _allowed(caller.role, p))
    return _ok({"username": caller.username, "role": caller.role, "permissions": permissions})


def _allowed(role: str, permission: P) -> bool:
    try:
        authorise(role, permission)
    except Forbidden:
        return False
    return True


async def list_controllers(request: web.Request, caller: Caller) -> web.StreamResponse:
    items = await request.app[ADMIN_KEY].store.list_controllers()
    return _ok({"controllers": [
        {"id": c.id, "name": c.name, "status": c.status, "delete_after": iso(c.delete_after)} for c in items
    ]})


async def add_controller(request: web.Request, caller: Caller) -> web.StreamResponse:
    body = await _body(request)
    admin = request.app[ADMIN_KEY]
    controller_id, name = _text(body, "id"), _text(body, "name")
    record = await admin.store.ensure_controller(controller_id or "", name or "", admin.clock())
    return _ok({"id": record.id, "name": record.name, "status": record.status}, 201)


async def export_controller(request: web.Request, caller: Caller) -> web.StreamResponse:
    admin = request.app[ADMIN_KEY]
    return _ok(await admin.export_controller(request.match_info["id"], caller.username))


async def offboard_controller(request: web.Request, caller: Caller) -> web.StreamResponse:
    body = await _body(request)
    grace = body.get("grace_days")
    if grace is not None and type(grace) is not int:
        raise ValueError("grace_days must be a whole number")
    record = await request.app[ADMIN_KEY].offboard(request.match_info["id"], caller.username, grace)
    return _ok({"id": record.id, "status": record.status, "delete_after": iso(record.delete_after)})


async def controller_sessions(request: web.Request, caller: Caller) -> web.StreamResponse:
    admin = request.app[ADMIN_KEY]
    since = _time(request.query.get("since"), "since", admin.clock() - dt.timedelta(days=1))
    until = _time(request.query.get("until"), "until", admin.clock() + dt.timedelta(seconds=1))
    rows = await admin.store.read_sessions(caller.username, admin.clock(), request.match_info["id"], since, until)
    return _ok({"sessions": [session_json(s) for s in rows]})


def _query(body: dict[str, Any], now: dt.datetime) -> SubjectQuery:
    until = _time(body.get("until"), "until", now + dt.timedelta(seconds=1))
    since = _time(body.get("since"), "since", until - dt.timedelta(days=100))
    return SubjectQuery(_text(body, "by") or "", _text(body, "value") or "", since, until)


async def search_subject(request: web.Request, caller: Caller) -> web.StreamResponse:
    body = await _body(request)
    admin = request.app[ADMIN_KEY]
    found = await admin.find_subject(_text(body, "controller") or "", _query(body, admin.clock()), caller.username)
    return _ok({"sessions": [{"id": s.id, "room_id": s.room_id, "joined_at": iso(s.joined_at),
                              "restricted": s.restricted_at is not None} for s in found]})


_KIND_PERMISSION = {
    "access": P.SUBJECTS_EXPORT, "export": P.SUBJECTS_EXPORT, "rectify": P.SUBJECTS_RECTIFY,
    "erase": P.SUBJECTS_ERASE, "restrict": P.SUBJECTS_RESTRICT,
}


async def subject_request(request: web.Request, caller: Caller) -> web.StreamResponse:
    body = await _body(request)
    kind = body.get("kind")
    if kind not in _KIND_PERMISSION:
        raise ValueError("kind is one of " + ", ".join(_KIND_PERMISSION))
    authorise(caller.role, _KIND_PERMISSION[kind])
    admin = request.app[ADMIN_KEY]
    changes = body.get("changes")
    if changes is not None and (not isinstance(changes, dict) or not all(
            isinstance(v, str | None) for v in changes.values())):
        raise ValueError("changes maps name, phone or email to the corrected text (or null)")
    received = _time(body["received_at"], "received_at") if body.get("received_at") is not None else None
    outcome = await admin.handle_request(
        _text(body, "controller") or "", kind, _query(body, admin.clock()), caller.username,
        received_at=received, changes=changes,
    )
    return _ok({"request": request_json(outcome.request, admin.clock()), "report": outcome.report,
                "export": outcome.export}, 201)


async def list_requests(request: web.Request, caller: Caller) -> web.StreamResponse:
    admin = request.app[ADMIN_KEY]
    rows = await admin.store.list_requests(request.query.get("controller"))
    now = admin.clock()
    return _ok({"requests": [request_json(r, now) for r in rows]})


async def run_retention(request: web.Request, caller: Caller) -> web.StreamResponse:
    admin = request.app[ADMIN_KEY]
    result = await admin.run_retention(request.app[RETENTION_KEY], actor=caller.username)
    deleted = await admin.run_offboarding(actor=caller.username)
    return _ok({"cutoff": iso(result.cutoff), "anonymised": result.anonymised, "visits": result.visits,
                "rooms_removed": result.rooms_removed, "controllers_deleted": deleted})


async def audit_log(request: web.Request, caller: Caller) -> web.StreamResponse:
    lines = await request.app[ADMIN_KEY].audit_lines(caller.username)
    return web.Response(text="".join(line + "\n" for line in lines), content_type="application/x-ndjson",
                        headers={"Cache-Control": "no-store"})


async def audit_verify(request: web.Request, caller: Caller) -> web.StreamResponse:
    count = request.query.get("count")
    if count is not None and not count.isdigit():
        raise ValueError("count must be a whole number")
    result = await request.app[ADMIN_KEY].verify_audit(request.query.get("head"), int(count) if count else None)
    return _ok({"ok": result.ok, "problem": result.problem.value if result.problem else None,
                "first_bad_seq": result.first_bad_seq, "detail": result.detail,
                "entries_checked": result.entries_checked, "head": result.head})


async def list_operators(request: web.Request, caller: Caller) -> web.StreamResponse:
    items = await request.app[ADMIN_KEY].store.list_operators()
    return _ok({"operators": [{"username": o.username, "role": o.role, "disabled": o.disabled_at is not None}
                              for o in items]})


async def add_operator(request: web.Request, caller: Caller) -> web.StreamResponse:
    body = await _body(request)
    record, uri = await request.app[ADMIN_KEY].add_operator(
        _text(body, "username") or "", Role(_text(body, "role")).value, _text(body, "password") or "", caller.username
    )
    return _ok({"username": record.username, "role": record.role, "totp_uri": uri}, 201)


async def change_operator(request: web.Request, caller: Caller) -> web.StreamResponse:
    body = await _body(request)
    admin = request.app[ADMIN_KEY]
    username = request.match_info["name"]
    role = body.get("role")
    disabled = body.get("disabled")
    if role is not None:
        role = Role(role).value
    if disabled is not None and type(disabled) is not bool:
        raise ValueError("disabled is true or false")
    if role is None and disabled is None and "password" not in body:
        raise ValueError("change role, disabled or password")
    if username == caller.username and (disabled or (role is not None and role != caller.role)):
        raise Conflict("you cannot disable yourself or change your own role")
    await admin.store.update_operator(username, caller.username, admin.clock(), role=role, disabled=disabled)
    if "password" in body:
        await admin.set_password(username, _text(body, "password") or "", caller.username)
    return _ok({"username": username})


async def list_breaches(request: web.Request, caller: Caller) -> web.StreamResponse:
    admin = request.app[ADMIN_KEY]
    items = await admin.list_breaches()
    now = admin.clock()
    late = {b.id for b in breaches.overdue(items, now)}
    return _ok({"breaches": [{**breaches.breach_to_json(b), "status": b.status.value,
                              "deadline": iso(breaches.deadline(b)), "overdue": b.id in late,
                              "missing": breaches.missing_fields(b)} for b in items]})


async def put_breach(request: web.Request, caller: Caller) -> web.StreamResponse:
    body = await _body(request)
    admin = request.app[ADMIN_KEY]
    breach_id = request.match_info["id"]
    if await admin.store.get_breach(breach_id) is None:
        breach = await admin.record_breach({**body, "id": breach_id}, caller.username)
    else:
        breach = await admin.update_breach(breach_id, body, caller.username)
    return _ok({**breaches.breach_to_json(breach), "missing": breaches.missing_fields(breach),
                "deadline": iso(breaches.deadline(breach))})


async def notify_breach(request: web.Request, caller: Caller) -> web.StreamResponse:
    body = await _body(request)
    breach = await request.app[ADMIN_KEY].mark_notified(
        request.match_info["id"], _text(body, "controller") or "", caller.username
    )
    return _ok(breaches.breach_to_json(breach))


async def breach_notification(request: web.Request, caller: Caller) -> web.StreamResponse:
    admin = request.app[ADMIN_KEY]
    breach = await admin.get_breach(request.match_info["id"])
    markdown, document = breaches.notification_document(
        breach, request.query.get("controller", ""), request.app[PROCESSOR_KEY]
    )
    if request.query.get("format") == "md":
        return web.Response(text=markdown, content_type="text/markdown", headers={"Cache-Control": "no-store"})
    return _ok(document)


async def show_register(request: web.Request, caller: Caller) -> web.StreamResponse:
    admin = request.app[ADMIN_KEY]
    controllers = [register.ControllerInfo(id=c.id, name=c.name) for c in await admin.store.list_controllers()
                   if c.status != "deleted"]
    settings = request.app[REGISTER_SETTINGS_KEY]
    document = register.build_register(processor=request.app[PROCESSOR_KEY], controllers=controllers,
                                       settings=settings)
    if request.query.get("format") == "md":
        return web.Response(text=register.register_markdown(document), content_type="text/markdown")
    return _ok(document)


async def run_backup(request: web.Request, caller: Caller) -> web.StreamResponse:
    """Write an encrypted backup into the configured folder (restoring needs the machine: the CLI)."""
    folder = request.app[BACKUP_DIR_KEY]
    if folder is None:
        raise Conflict("backups through the API are off on this node; use kijkmee admin backup run")
    admin = request.app[ADMIN_KEY]
    summary = await admin.backup(folder / f"kijkmee-{admin.clock():%Y%m%dT%H%M%S%fZ}.backup", caller.username)
    return _ok({"file": summary.path.name, "rows": summary.counts, "created_at": iso(summary.created_at)}, 201)


ROUTES: tuple[tuple[str, str, P | None, Handler], ...] = (
    ("GET", "/admin/api/me", None, me),
    ("GET", "/admin/api/controllers", P.REGISTER_READ, list_controllers),
    ("POST", "/admin/api/controllers", P.OPERATORS_MANAGE, add_controller),
    ("GET", "/admin/api/controllers/{id}/export", P.CONTROLLERS_EXPORT, export_controller),
    ("POST", "/admin/api/controllers/{id}/offboard", P.CONTROLLERS_OFFBOARD, offboard_controller),
    ("GET", "/admin/api/controllers/{id}/sessions", P.SESSIONS_READ, controller_sessions),
    ("POST", "/admin/api/subjects/search", P.SUBJECTS_SEARCH, search_subject),
    # The kind of request picks the permission inside (export, rectify, erase, restrict); reaching
    # the route at all needs one of them, which SUBJECTS_SEARCH stands for in the matrix.
    ("POST", "/admin/api/subjects/requests", P.SUBJECTS_SEARCH, subject_request),
    ("GET", "/admin/api/subjects/requests", P.SUBJECTS_SEARCH, list_requests),
    ("POST", "/admin/api/retention/run", P.RETENTION_RUN, run_retention),
    ("GET", "/admin/api/audit", P.AUDIT_READ, audit_log),
    ("GET", "/admin/api/audit/verify", P.AUDIT_VERIFY, audit_verify),
    ("GET", "/admin/api/operators", P.OPERATORS_MANAGE, list_operators),
    ("POST", "/admin/api/operators", P.OPERATORS_MANAGE, add_operator),
    ("PATCH", "/admin/api/operators/{name}", P.OPERATORS_MANAGE, change_operator),
    ("GET", "/admin/api/breaches", P.BREACHES_READ, list_breaches),
    ("PUT", "/admin/api/breaches/{id}", P.BREACHES_WRITE, put_breach),
    ("POST", "/admin/api/breaches/{id}/notify", P.BREACHES_NOTIFY, notify_breach),
    ("GET", "/admin/api/breaches/{id}/notification", P.BREACHES_READ, breach_notification),
    ("GET", "/admin/api/register", P.REGISTER_READ, show_register),
    ("POST", "/admin/api/backups", P.BACKUP_RUN, run_backup),
)
"""(method, path, permission, handler): the authorisation matrix of the API, as data."""


@dataclass(frozen=True)
class AdminSettings:
    service: DataHandling
    processor: register.ProcessorInfo
    retention_days: int
    register_settings: register.RegisterSettings
    backup_dir: Path | None = None
    """Where POST /admin/api/backups writes; None: backups only through the CLI."""


async def metrics(request: web.Request) -> web.StreamResponse:
    """Prometheus text: counts only (overdue breaches and requests, age of the oldest session)."""
    admin = request.app[ADMIN_KEY]
    now = admin.clock()
    overdue_breaches = len(await admin.overdue_breaches())
    overdue_requests = len(await admin.overdue_requests())
    oldest = await admin.store.oldest_session()
    age = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
    lines = [
        "# HELP kijkmee_breaches_overdue Breaches not reported to every controller within 48 hours.",
        "# TYPE kijkmee_breaches_overdue gauge",
        f"kijkmee_breaches_overdue {overdue_breaches}",
        "# HELP kijkmee_subject_requests_overdue Data-subject requests open past their one-month deadline.",
        "# TYPE kijkmee_subject_requests_overdue gauge",
        f"kijkmee_subject_requests_overdue {overdue_requests}",
        "# HELP kijkmee_oldest_session_age_seconds Age of the oldest session still holding personal data.",
        "# TYPE kijkmee_oldest_session_age_seconds gauge",
        f"kijkmee_oldest_session_age_seconds {age:.0f}",
        "",
    ]
    return web.Response(text="\n".join(lines), content_type="text/plain", headers={"Cache-Control": "no-store"})


def add_admin_routes(app: web.Application, settings: AdminSettings) -> None:
    app[ADMIN_KEY] = settings.service
    app[SESSIONS_KEY] = {}
    app[PROCESSOR_KEY] = settings.processor
    app[RETENTION_KEY] = settings.retention_days
    app[REGISTER_SETTINGS_KEY] = settings.register_settings
    app[BACKUP_DIR_KEY] = settings.backup_dir
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/admin/api/session", sign_in)
    app.router.add_delete("/admin/api/session", sign_out)
    for method, path, permission, handler in ROUTES:
        app.router.add_route(method, path, guarded(permission, handler))
