"""The JSON documents kijkmee hands to a controller, and their published JSON Schemas.

- a subject export (art. 15 and 20): every stored row that refers to one data subject;
- a controller export (art. 28(3)(g), agreement art. 2.3): all of a controller's personal data;
- a request report: what was done for a data-subject request, by id only, for the controller's files.

The schemas are also files in `docs/schemas/` (a test keeps them equal) so a controller can validate
what it receives without running kijkmee.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from metadata_store.store import ControllerRecord, RoomRecord, SessionRecord, SubjectRequestRecord

SUBJECT_EXPORT_FORMAT = "kijkmee-subject-export-1"
CONTROLLER_EXPORT_FORMAT = "kijkmee-controller-export-1"
REQUEST_REPORT_FORMAT = "kijkmee-request-report-1"


def iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def session_json(s: SessionRecord) -> dict[str, Any]:
    return {
        "id": s.id, "room_id": s.room_id, "joined_at": iso(s.joined_at), "left_at": iso(s.left_at),
        "ip": s.ip, "name": s.name, "phone": s.phone, "email": s.email,
        "participants": s.participants, "route": s.route, "setup_ms": s.setup_ms,
        "restricted_at": iso(s.restricted_at),
    }


def request_json(r: SubjectRequestRecord, now: dt.datetime | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": r.id, "controller_id": r.controller_id, "kind": r.kind, "received_at": iso(r.received_at),
        "deadline": iso(r.deadline), "completed_at": iso(r.completed_at), "handled_by": r.handled_by,
        "session_ids": list(r.session_ids), "outcome": r.outcome,
    }
    if now is not None:
        doc["overdue"] = r.overdue(now)
    return doc


def controller_json(c: ControllerRecord) -> dict[str, Any]:
    return {
        "id": c.id, "name": c.name, "created_at": iso(c.created_at), "status": c.status,
        "offboarding_at": iso(c.offboarding_at), "delete_after": iso(c.delete_after), "deleted_at": iso(c.deleted_at),
    }


def room_json(r: RoomRecord) -> dict[str, Any]:
    return {"id": r.id, "created_at": iso(r.created_at), "expires_at": iso(r.expires_at)}


def subject_export(
    request: SubjectRequestRecord, sessions: Sequence[SessionRecord], now: dt.datetime
) -> dict[str, Any]:
    return {
        "format": SUBJECT_EXPORT_FORMAT,
        "generated_at": iso(now),
        "controller_id": request.controller_id,
        "request_id": request.id,
        "sessions": [session_json(s) for s in sessions],
    }


def controller_export(data: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    return {
        "format": CONTROLLER_EXPORT_FORMAT,
        "generated_at": iso(now),
        "controller": controller_json(data["controller"]),
        "rooms": [room_json(r) for r in data["rooms"]],
        "sessions": [session_json(s) for s in data["sessions"]],
        "subject_requests": [request_json(r) for r in data["requests"]],
    }


def request_report(request: SubjectRequestRecord, now: dt.datetime) -> dict[str, Any]:
    """For the controller's files: what was asked, when, what was done, and whether it was on time."""
    on_time = request.completed_at is not None and request.completed_at <= request.deadline
    return {"format": REQUEST_REPORT_FORMAT, "generated_at": iso(now), **request_json(request, now), "on_time": on_time}


KIND_WORDS = {
    "access": "access (art. 15)",
    "export": "data portability (art. 20)",
    "rectify": "rectification (art. 16)",
    "erase": "erasure (art. 17)",
    "restrict": "restriction of processing (art. 18)",
}


def request_report_markdown(report: dict[str, Any]) -> str:
    done = report["completed_at"] or "not yet"
    lines = [
        f"# Data-subject request {report['id']}",
        "",
        f"- Controller: `{report['controller_id']}`",
        f"- Request: {KIND_WORDS.get(report['kind'], report['kind'])}",
        f"- Received: {report['received_at']}",
        f"- Deadline: {report['deadline']} (one month after receipt)",
        f"- Completed: {done}" + (" (on time)" if report["on_time"] else ""),
        f"- Handled by: {report['handled_by'] or '-'}",
        f"- Sessions covered: {len(report['session_ids'])}"
        + (f" (ids {', '.join(str(i) for i in report['session_ids'])})" if report["session_ids"] else ""),
    ]
    for key, value in sorted(report["outcome"].items()):
        lines.append(f"- {key.replace('_', ' ')}: {value}")
    lines += ["", "This report holds ids only; the data itself is in the export sent with it, if any.", ""]
    return "\n".join(lines)


# --- JSON Schemas -------------------------------------------------------------------------------------

_TIME = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$"}
_OPT_TIME = {"anyOf": [_TIME, {"type": "null"}]}
_OPT_STR = {"type": ["string", "null"]}
_OPT_INT = {"type": ["integer", "null"], "minimum": 0}


def _object(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": sorted(props), "properties": props}


SESSION_SCHEMA = _object({
    "id": {"type": "integer"}, "room_id": {"type": "string"}, "joined_at": _TIME, "left_at": _OPT_TIME,
    "ip": {"type": "string", "description": "address the participant joined from"},
    "name": {**_OPT_STR, "description": "only when the participant typed one"},
    "phone": {**_OPT_STR, "description": "only when the participant typed one"},
    "email": {**_OPT_STR, "description": "only when the participant typed one"},
    "participants": _OPT_INT, "route": {"enum": ["direct", "relay", None]}, "setup_ms": _OPT_INT,
    "restricted_at": {**_OPT_TIME, "description": "set when processing is restricted (art. 18)"},
})

REQUEST_SCHEMA = _object({
    "id": {"type": "string"}, "controller_id": {"type": "string"},
    "kind": {"enum": list(KIND_WORDS)}, "received_at": _TIME, "deadline": _TIME, "completed_at": _OPT_TIME,
    "handled_by": _OPT_STR, "session_ids": {"type": "array", "items": {"type": "integer"}},
    "outcome": {"type": "object"},
})

SUBJECT_EXPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://kijkmee.nl/schemas/subject-export-1.json",
    "title": "kijkmee subject export (GDPR art. 15 and 20)",
    **_object({
        "format": {"const": SUBJECT_EXPORT_FORMAT}, "generated_at": _TIME, "controller_id": {"type": "string"},
        "request_id": {"type": "string"}, "sessions": {"type": "array", "items": SESSION_SCHEMA},
    }),
}

CONTROLLER_EXPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://kijkmee.nl/schemas/controller-export-1.json",
    "title": "kijkmee controller export (agreement art. 2.3)",
    **_object({
        "format": {"const": CONTROLLER_EXPORT_FORMAT}, "generated_at": _TIME,
        "controller": _object({
            "id": {"type": "string"}, "name": {"type": "string"}, "created_at": _TIME,
            "status": {"enum": ["active", "offboarding", "deleted"]}, "offboarding_at": _OPT_TIME,
            "delete_after": _OPT_TIME, "deleted_at": _OPT_TIME,
        }),
        "rooms": {"type": "array", "items": _object(
            {"id": {"type": "string"}, "created_at": _TIME, "expires_at": _TIME})},
        "sessions": {"type": "array", "items": SESSION_SCHEMA},
        "subject_requests": {"type": "array", "items": REQUEST_SCHEMA},
    }),
}

REQUEST_REPORT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://kijkmee.nl/schemas/request-report-1.json",
    "title": "kijkmee data-subject request report",
    **_object({
        **REQUEST_SCHEMA["properties"], "format": {"const": REQUEST_REPORT_FORMAT}, "generated_at": _TIME,
        "overdue": {"type": "boolean"}, "on_time": {"type": "boolean"},
    }),
}

SCHEMAS = {
    "subject-export-1.json": SUBJECT_EXPORT_SCHEMA,
    "controller-export-1.json": CONTROLLER_EXPORT_SCHEMA,
    "request-report-1.json": REQUEST_REPORT_SCHEMA,
}
"""File name in docs/schemas/ (and under /privacy/schemas/) -> schema."""


def schema_text(schema: Mapping[str, Any]) -> str:
    """A schema as its file in docs/schemas/ holds it: sorted keys, two-space indent, final newline."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schema_files(folder: Path) -> list[Path]:
    """Write every schema of `SCHEMAS` into `folder` (created when missing); the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in SCHEMAS.items():
        path = folder / name
        path.write_text(schema_text(schema), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":  # python -m metadata_store.exports [FOLDER]: regenerate docs/schemas/
    for written_path in write_schema_files(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas")):
        print(written_path)
