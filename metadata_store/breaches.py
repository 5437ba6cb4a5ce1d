"""Breach register ("datalekken", agreement art. 7; GDPR art. 33(2)-(5)).

A `Breach` holds what the Dutch Autoriteit Persoonsgegevens' "melding datalek" form and GDPR
art. 33(3) ask for: nature, categories and approximate numbers of data subjects and records,
a contact point, likely consequences and measures. The processor must tell every affected
controller within 48 hours of discovery (art. 7.1); `mark_notified` refuses while a required field
is missing, and `overdue` lists breaches past that deadline with a controller still untold.

The model holds no data about any data subject: only categories, counts and text written by the
processor's staff (a test pins the field list). The only person named is the processor's own
contact point.

Pure: no clock, no I/O. Times come in as `now`; every datetime is timezone-aware and kept in UTC.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from metadata_store.register import (
    DATA_CLASS_LABELS,
    ContactPoint,
    ControllerInfo,
    ProcessorInfo,
    RegisterError,
    processor_json,
)
from metadata_store.schema import DataClass

NOTIFICATION_WINDOW = dt.timedelta(hours=48)
"""Agreement art. 7.1: at the latest 48 hours after the processor learned of the breach."""

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TEXT_LIMIT = 20_000


class BreachError(ValueError):
    """Root of the breach register's errors."""


class BreachInvalid(BreachError):
    """A breach record is malformed (bad id, naive time, times out of order, unknown value)."""


class BreachIncomplete(BreachError):
    """A required field is missing, so the breach cannot be notified yet."""

    def __init__(self, breach_id: str, missing: list[str]) -> None:
        super().__init__(f"breach {breach_id} cannot be notified: missing {', '.join(missing)}")
        self.missing = missing
        """Names of the missing fields, as `missing_fields` returns them."""


class UnknownController(BreachError):
    """The controller is not among the breach's affected controllers."""


class BreachClosed(BreachError):
    """The breach is closed and can no longer change."""


class BreachNature(enum.Enum):
    """Which security property was broken (the AP form's "aard van de inbreuk")."""

    CONFIDENTIALITY = "confidentiality"
    """Read, copied or disclosed without authorisation."""
    INTEGRITY = "integrity"
    """Changed without authorisation."""
    AVAILABILITY = "availability"
    """Lost, destroyed or unreachable."""


NATURE_NL = {
    BreachNature.CONFIDENTIALITY: "vertrouwelijkheid",
    BreachNature.INTEGRITY: "integriteit",
    BreachNature.AVAILABILITY: "beschikbaarheid",
}


class SubjectCategory(enum.Enum):
    """Categories of data subjects, from annex 1 of the agreement."""

    CONTROLLER_STAFF = "controller-staff"
    """Medewerkers van klanten: the controller's own staff."""
    CONTROLLER_CUSTOMERS = "controller-customers"
    """Klanten van klanten: the controller's customers."""
    OTHER_CONTACTS = "other-contacts"
    """Other people the controller brings into calls."""


SUBJECT_NL = {
    SubjectCategory.CONTROLLER_STAFF: "medewerkers van klanten",
    SubjectCategory.CONTROLLER_CUSTOMERS: "klanten van klanten",
    SubjectCategory.OTHER_CONTACTS: "overige contactpersonen",
}


class BreachStatus(enum.Enum):
    """Where a breach stands; derived from the record, never stored on its own."""

    OPEN = "open"
    """At least one affected controller has not been told."""
    NOTIFIED = "notified"
    """Every affected controller has been told."""
    CLOSED = "closed"
    """Handled: nothing more will change."""


@dataclass(frozen=True)
class Estimate:
    """An approximate count, "bij benadering": a range, or one number when low == high."""

    low: int
    """Smallest plausible count."""
    high: int
    """Largest plausible count."""

    def __post_init__(self) -> None:
        if not all(type(v) is int for v in (self.low, self.high)) or not 0 <= self.low <= self.high:
            raise BreachInvalid(f"an estimate needs whole numbers 0 <= low <= high, not {self.low!r}-{self.high!r}")

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


def parse_estimate(text: str) -> Estimate:
    """`"12"` or `"10-20"` (as typed on the command line) into an `Estimate`; raises `BreachInvalid`."""
    match = re.fullmatch(r"\s*(\d{1,12})\s*(?:[-\u2013]\s*(\d{1,12})\s*)?", text)
    if not match:
        raise BreachInvalid(f"an estimate is a number or a range such as 10-20, not {text!r}")
    low = int(match[1])
    return Estimate(low, int(match[2]) if match[2] else low)


@dataclass(frozen=True)
class AffectedController:
    """One controller whose data the breach touches, with its own counts and notification time."""

    controller_id: str
    """The controller's id in kijkmee."""
    data_subjects: Estimate | None = None
    """Approximate number of this controller's data subjects concerned; None while unknown."""
    records: Estimate | None = None
    """Approximate number of this controller's records (rows) concerned; None while unknown."""
    notified_at: dt.datetime | None = None
    """When the processor told this controller; None while not yet told."""


@dataclass(frozen=True)
class Breach:
    """One personal data breach as the processor records it (art. 7.2; GDPR art. 33(3))."""

    id: str
    """The processor's reference, e.g. "2026-003" (letters, digits, '.', '_', '-')."""
    discovered_at: dt.datetime
    """When the processor learned of it ("kennisname"): the 48-hour clock starts here."""
    affected: tuple[AffectedController, ...] = ()
    """Controllers whose personal data is concerned; each must be told."""
    occurred_from: dt.datetime | None = None
    """Start of the breach, when known."""
    occurred_until: dt.datetime | None = None
    """End of the breach, when known; None while ongoing or unknown."""
    nature: frozenset[BreachNature] = frozenset()
    """Which security properties were broken."""
    summary: str = ""
    """What happened, in words (the AP form's "samenvatting")."""
    cause: str = ""
    """How it happened, when known (optional)."""
    subject_categories: frozenset[SubjectCategory] = frozenset()
    """Categories of data subjects concerned."""
    data_classes: frozenset[DataClass] = frozenset()
    """Categories of personal data concerned, in the store schema's terms."""
    contact: ContactPoint | None = None
    """The processor's DPO or other contact point for more information (art. 33(3)(b))."""
    likely_consequences: str = ""
    """Likely consequences for the people concerned."""
    measures_taken: str = ""
    """Measures already taken to address the breach and limit its effects."""
    measures_proposed: str = ""
    """Measures proposed; at least one of measures_taken and measures_proposed is required."""
    closed_at: dt.datetime | None = None
    """When the breach was closed; None while it is being handled."""
    closure_note: str = ""
    """Why it was closed; required when it was closed without notification (risk ruled out, art. 7.1)."""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _ID.fullmatch(self.id):
            raise BreachInvalid(f"breach id {self.id!r} must be 1-64 letters, digits, '.', '_' or '-'")
        for name in ("discovered_at", "occurred_from", "occurred_until", "closed_at"):
            object.__setattr__(self, name, _utc(getattr(self, name), name))
        object.__setattr__(self, "affected", tuple(_checked_affected(self)))
        for name, kind in (("nature", BreachNature), ("subject_categories", SubjectCategory),
                           ("data_classes", DataClass)):
            values = getattr(self, name)
            if isinstance(values, str) or not all(isinstance(v, kind) for v in values):
                raise BreachInvalid(f"{name} must hold {kind.__name__} values")
            object.__setattr__(self, name, frozenset(values))
        if self.occurred_from and self.occurred_until and self.occurred_from > self.occurred_until:
            raise BreachInvalid("occurred_from is after occurred_until")
        if self.closed_at and self.closed_at < self.discovered_at:
            raise BreachInvalid("closed_at is before discovered_at")
        for name in ("summary", "cause", "likely_consequences", "measures_taken", "measures_proposed", "closure_note"):
            if not isinstance(getattr(self, name), str) or len(getattr(self, name)) > _TEXT_LIMIT:
                raise BreachInvalid(f"{name} must be text of at most {_TEXT_LIMIT} characters")

    @property
    def status(self) -> BreachStatus:
        """Closed, notified (every affected controller told) or open."""
        if self.closed_at is not None:
            return BreachStatus.CLOSED
        if self.affected and not pending_controllers(self):
            return BreachStatus.NOTIFIED
        return BreachStatus.OPEN


def _utc(value: dt.datetime | None, name: str) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, dt.datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise BreachInvalid(f"{name} must be a timezone-aware datetime")
    return value.astimezone(dt.UTC)


def _checked_affected(breach: Breach) -> Iterable[AffectedController]:
    seen: set[str] = set()
    for a in breach.affected:
        if not isinstance(a.controller_id, str) or not _ID.fullmatch(a.controller_id):
            raise BreachInvalid(f"controller id {a.controller_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
        if a.controller_id in seen:
            raise BreachInvalid(f"controller {a.controller_id} is listed twice")
        seen.add(a.controller_id)
        at = _utc(a.notified_at, "notified_at")
        if at is not None and at < breach.discovered_at:
            raise BreachInvalid(f"controller {a.controller_id} notified before the breach was discovered")
        yield dataclasses.replace(a, notified_at=at) if at != a.notified_at else a


def deadline(breach: Breach) -> dt.datetime:
    """The latest moment to notify the controllers: 48 hours after discovery (art. 7.1)."""
    return breach.discovered_at + NOTIFICATION_WINDOW


def hours_left(breach: Breach, now: dt.datetime) -> float:
    """Hours until the deadline; negative once it has passed."""
    return (deadline(breach) - now).total_seconds() / 3600


def pending_controllers(breach: Breach) -> list[str]:
    """Affected controllers not yet told."""
    return [a.controller_id for a in breach.affected if a.notified_at is None]


def notified_late(breach: Breach) -> list[str]:
    """Controllers told after the deadline (for audits: the record keeps it)."""
    limit = deadline(breach)
    return [a.controller_id for a in breach.affected if a.notified_at is not None and a.notified_at > limit]


def _affected(breach: Breach, controller_id: str) -> AffectedController:
    for a in breach.affected:
        if a.controller_id == controller_id:
            return a
    raise UnknownController(f"controller {controller_id!r} is not affected by breach {breach.id}")


def missing_fields(breach: Breach, controller_id: str | None = None) -> list[str]:
    """Required fields still missing; per-controller counts for `controller_id`, or for all when None."""
    missing = [name for name in ("nature", "summary", "subject_categories", "data_classes", "contact",
                                 "likely_consequences") if not _present(getattr(breach, name))]
    if not (_present(breach.measures_taken) or _present(breach.measures_proposed)):
        missing.append("measures_taken or measures_proposed")
    if not breach.affected:
        missing.append("affected")
    chosen = [_affected(breach, controller_id)] if controller_id is not None else breach.affected
    for a in chosen:
        missing += [f"affected[{a.controller_id}].{name}" for name in ("data_subjects", "records")
                    if getattr(a, name) is None]
    return missing


def _present(value: object) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, frozenset | tuple):
        return bool(value)
    return value is not None


def mark_notified(breach: Breach, controller_id: str, now: dt.datetime) -> Breach:
    """Record that `controller_id` was told at `now`.

    Raises `BreachIncomplete` (with the missing field names) while a required field is missing,
    `UnknownController` for a controller the breach does not affect, `BreachClosed` once closed.
    Idempotent: a controller already told keeps its first notification time.
    """
    target = _affected(breach, controller_id)
    if target.notified_at is not None:
        return breach
    if breach.closed_at is not None:
        raise BreachClosed(f"breach {breach.id} is closed")
    missing = missing_fields(breach, controller_id)
    if missing:
        raise BreachIncomplete(breach.id, missing)
    now = _utc(now, "now") or now
    told = dataclasses.replace(target, notified_at=now)
    return dataclasses.replace(breach, affected=tuple(told if a is target else a for a in breach.affected))


def close(breach: Breach, now: dt.datetime, note: str = "") -> Breach:
    """Close a handled breach.

    Once every affected controller is told, it can always be closed. Before that it can be closed
    only before the deadline and with a `note` saying why a risk to people was ruled out: the one
    case in which article 7.1 needs no notification. Anything else raises `BreachError`.
    """
    if breach.closed_at is not None:
        raise BreachClosed(f"breach {breach.id} is already closed")
    now = _utc(now, "now") or now
    if pending_controllers(breach) or not breach.affected:
        if now > deadline(breach):
            who = ", ".join(pending_controllers(breach)) or "the affected controllers"
            raise BreachError(f"breach {breach.id}: notify {who} before closing; the 48-hour deadline has passed")
        if not note.strip():
            raise BreachError(f"breach {breach.id}: closing without notification needs a note saying why "
                              "a risk to people's rights and freedoms is ruled out (art. 7.1)")
    return dataclasses.replace(breach, closed_at=now, closure_note=note)


def overdue(breaches: Iterable[Breach], now: dt.datetime) -> list[Breach]:
    """Breaches past their deadline with an affected controller still untold (or none named yet)."""
    return [b for b in breaches
            if b.closed_at is None and now > deadline(b) and (pending_controllers(b) or not b.affected)]


def breach_metrics(breaches: Iterable[Breach], now: dt.datetime) -> dict[str, int]:
    """Counts for the metrics endpoint: open (overdue included), overdue, notified, closed."""
    items = list(breaches)
    counts = {status.value: 0 for status in BreachStatus}
    for b in items:
        counts[b.status.value] += 1
    return {"open": counts["open"], "overdue": len(overdue(items, now)),
            "notified": counts["notified"], "closed": counts["closed"]}


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def notification_json(breach: Breach, controller_id: str, processor: ProcessorInfo) -> dict[str, Any]:
    """The notification to one controller as JSON (`BREACH_NOTIFICATION_SCHEMA`).

    Holds this controller's counts only: other controllers are not named to it.
    Raises `BreachIncomplete` while a required field is missing.
    """
    missing = missing_fields(breach, controller_id)
    if missing:
        raise BreachIncomplete(breach.id, missing)
    mine = _affected(breach, controller_id)
    assert breach.contact is not None and mine.data_subjects and mine.records  # guaranteed by missing_fields
    return {
        "format": NOTIFICATION_FORMAT,
        "breach_id": breach.id,
        "controller_id": controller_id,
        "processor": processor_json(processor),
        "contact_point": {"name": breach.contact.name, "function": breach.contact.function,
                          "email": breach.contact.email, "phone": breach.contact.phone},
        "discovered_at": _iso(breach.discovered_at),
        "deadline": _iso(deadline(breach)),
        "occurred_from": _iso(breach.occurred_from),
        "occurred_until": _iso(breach.occurred_until),
        "nature": sorted(n.value for n in breach.nature),
        "summary": breach.summary,
        "cause": breach.cause,
        "data_subjects": {"categories": sorted(c.value for c in breach.subject_categories),
                          "approximate_number": {"low": mine.data_subjects.low, "high": mine.data_subjects.high}},
        "personal_data": {"categories": sorted(c.value for c in breach.data_classes),
                          "approximate_records": {"low": mine.records.low, "high": mine.records.high}},
        "likely_consequences": breach.likely_consequences,
        "measures_taken": breach.measures_taken,
        "measures_proposed": breach.measures_proposed,
        "legal_basis": "verwerkersovereenkomst art. 7; AVG/GDPR art. 33(2)",
    }


def _text(value: str) -> str:
    return value.strip() or "geen (none)"


def _when(value: str | None) -> str:
    return value or "onbekend (unknown)"


def notification_markdown(doc: Mapping[str, Any], controller: ControllerInfo | None = None) -> str:
    """The notification for people, from `notification_json`'s output; Dutch headings, English in brackets."""
    p, c = doc["processor"], doc["contact_point"]
    to = f"{controller.name} (`{doc['controller_id']}`)" if controller else f"`{doc['controller_id']}`"
    subjects = ", ".join(f"{SUBJECT_NL[SubjectCategory(v)]} ({v})" for v in doc["data_subjects"]["categories"])
    data = ", ".join(f"{DATA_CLASS_LABELS[DataClass(v)]} ({v})" for v in doc["personal_data"]["categories"])
    nature = ", ".join(f"{NATURE_NL[BreachNature(v)]} ({v})" for v in doc["nature"])
    n, r = doc["data_subjects"]["approximate_number"], doc["personal_data"]["approximate_records"]
    contact = ", ".join(v for v in (c["name"], c["function"], c["email"], c["phone"]) if v)
    return "\n".join([
        f"# Melding datalek (personal data breach notification) {doc['breach_id']}", "",
        f"- Aan (to): {to}",
        f"- Van (from): {p['name']}, {p['address']}, KvK {p['registration']}",
        f"- Grondslag (basis): {doc['legal_basis']}", "",
        "## Tijdlijn (timeline)", "",
        f"- Ontdekt (discovered): {doc['discovered_at']}",
        f"- Uiterste meldtermijn (notification deadline): {doc['deadline']}",
        f"- Begin van de inbreuk (breach began): {_when(doc['occurred_from'])}",
        f"- Einde van de inbreuk (breach ended): {_when(doc['occurred_until'])}", "",
        "## Aard van de inbreuk (nature of the breach)", "", f"Geschonden (broken): {nature}", "",
        _text(doc["summary"]), "", f"Oorzaak (cause): {_text(doc['cause'])}", "",
        "## Betrokkenen (data subjects)", "", f"- Categorieën (categories): {subjects}",
        f"- Aantal bij benadering (approximate number): {_range(n)}", "",
        "## Persoonsgegevens (personal data records)", "", f"- Categorieën (categories): {data}",
        f"- Aantal records bij benadering (approximate number of records): {_range(r)}", "",
        "## Contactpunt (contact point)", "", contact, "",
        "## Waarschijnlijke gevolgen (likely consequences)", "", _text(doc["likely_consequences"]), "",
        "## Genomen maatregelen (measures taken)", "", _text(doc["measures_taken"]), "",
        "## Voorgestelde maatregelen (measures proposed)", "", _text(doc["measures_proposed"]), "",
    ])


def _range(value: Mapping[str, int]) -> str:
    return str(Estimate(value["low"], value["high"]))


def notification_document(
    breach: Breach, controller_id: str, processor: ProcessorInfo, controller: ControllerInfo | None = None,
) -> tuple[str, dict[str, Any]]:
    """(Markdown, JSON) notification of `breach` to one controller; raises `BreachIncomplete`."""
    if controller is not None and controller.id != controller_id:
        raise UnknownController(f"controller details are for {controller.id!r}, not {controller_id!r}")
    doc = notification_json(breach, controller_id, processor)
    return notification_markdown(doc, controller), doc


NOTIFICATION_FORMAT = "kijkmee-breach-notification-1"
_UTC_TIME = {"type": "string", "format": "date-time", "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$"}
_RANGE = {"type": "object", "additionalProperties": False, "required": ["low", "high"],
          "properties": {"low": {"type": "integer", "minimum": 0}, "high": {"type": "integer", "minimum": 0}}}
_TEXT = {"type": "string", "maxLength": _TEXT_LIMIT}
_REQUIRED_TEXT = {"type": "string", "minLength": 1, "maxLength": _TEXT_LIMIT, "pattern": r"\S"}
_CONTACT = {"type": "object", "additionalProperties": False, "required": ["name", "function", "email", "phone"],
            "properties": {"name": {"type": "string", "minLength": 1}, "function": {"type": "string"},
                           "email": {"type": "string"}, "phone": {"type": "string"}},
            "anyOf": [{"properties": {"email": {"minLength": 1}}}, {"properties": {"phone": {"minLength": 1}}}]}


def _categories(values: Iterable[str]) -> dict[str, Any]:
    return {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": list(values)}}


BREACH_NOTIFICATION_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://kijkmee.invalid/schemas/breach-notification-1.json",
    "title": "kijkmee personal data breach notification to a controller (GDPR art. 33(3))",
    "type": "object",
    "additionalProperties": False,
    "required": ["format", "breach_id", "controller_id", "processor", "contact_point", "discovered_at", "deadline",
                 "occurred_from", "occurred_until", "nature", "summary", "cause", "data_subjects", "personal_data",
                 "likely_consequences", "measures_taken", "measures_proposed", "legal_basis"],
    "properties": {
        "format": {"const": NOTIFICATION_FORMAT},
        "breach_id": {"type": "string", "pattern": "^" + _ID.pattern + "$"},
        "controller_id": {"type": "string", "pattern": "^" + _ID.pattern + "$"},
        "processor": {"type": "object", "required": ["name", "address", "registration", "contact", "dpo"]},
        "contact_point": _CONTACT,
        "discovered_at": _UTC_TIME,
        "deadline": _UTC_TIME,
        "occurred_from": {"oneOf": [{"type": "null"}, _UTC_TIME]},
        "occurred_until": {"oneOf": [{"type": "null"}, _UTC_TIME]},
        "nature": _categories(n.value for n in BreachNature),
        "summary": _REQUIRED_TEXT,
        "cause": _TEXT,
        "data_subjects": {"type": "object", "additionalProperties": False,
                          "required": ["categories", "approximate_number"],
                          "properties": {"categories": _categories(c.value for c in SubjectCategory),
                                         "approximate_number": _RANGE}},
        "personal_data": {"type": "object", "additionalProperties": False,
                          "required": ["categories", "approximate_records"],
                          "properties": {"categories": _categories(c.value for c in DataClass),
                                         "approximate_records": _RANGE}},
        "likely_consequences": _REQUIRED_TEXT,
        "measures_taken": _TEXT,
        "measures_proposed": _TEXT,
        "legal_basis": {"type": "string"},
    },
    "anyOf": [{"properties": {"measures_taken": {"pattern": r"\S"}}},
              {"properties": {"measures_proposed": {"pattern": r"\S"}}}],
}
"""Published JSON Schema (draft 2020-12) of `notification_json`."""


# Persistence: the store keeps breaches as JSON documents; loading raises only BreachInvalid.

def breach_to_json(breach: Breach) -> dict[str, Any]:
    """The whole record, for storage (round-trips through `breach_from_json`)."""
    c = breach.contact
    return {
        "id": breach.id, "discovered_at": _iso(breach.discovered_at),
        "affected": [{"controller_id": a.controller_id, "data_subjects": _est(a.data_subjects),
                      "records": _est(a.records), "notified_at": _iso(a.notified_at)} for a in breach.affected],
        "occurred_from": _iso(breach.occurred_from), "occurred_until": _iso(breach.occurred_until),
        "nature": sorted(n.value for n in breach.nature), "summary": breach.summary, "cause": breach.cause,
        "subject_categories": sorted(s.value for s in breach.subject_categories),
        "data_classes": sorted(d.value for d in breach.data_classes),
        "contact": None if c is None else {"name": c.name, "function": c.function, "email": c.email, "phone": c.phone},
        "likely_consequences": breach.likely_consequences, "measures_taken": breach.measures_taken,
        "measures_proposed": breach.measures_proposed, "closed_at": _iso(breach.closed_at),
        "closure_note": breach.closure_note,
    }


def _est(e: Estimate | None) -> list[int] | None:
    return None if e is None else [e.low, e.high]


def _time(value: Any) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


_INPUT_DEFAULTS: dict[str, Any] = {
    "affected": [], "occurred_from": None, "occurred_until": None, "nature": [], "summary": "", "cause": "",
    "subject_categories": [], "data_classes": [], "contact": None, "likely_consequences": "",
    "measures_taken": "", "measures_proposed": "", "closed_at": None, "closure_note": "",
}


def breach_from_input(obj: Mapping[str, Any], existing: Breach | None = None) -> Breach:
    """A breach from what an operator sent (fields may be left out), on top of `existing` when updating.

    Notification and closing times cannot be set this way: they only change through `mark_notified`
    and `close`, which check the required fields first. The id stays; a corrected `discovered_at` is
    taken (the 48-hour deadline moves with it, and the change is in the audit log)."""
    if not isinstance(obj, Mapping):
        raise BreachInvalid("a breach is a JSON object")
    base = breach_to_json(existing) if existing is not None else dict(_INPUT_DEFAULTS)
    merged: dict[str, Any] = {**base, **{k: v for k, v in obj.items() if k not in ("closed_at", "closure_note")}}
    if existing is not None:
        merged["id"] = existing.id  # a correction of discovered_at is allowed: the deadline follows it
    told = {a.controller_id: a.notified_at for a in (existing.affected if existing else ())}
    affected = merged.get("affected")
    if not isinstance(affected, list) or not all(isinstance(a, Mapping) for a in affected):
        raise BreachInvalid("affected is a list of {controller_id, data_subjects, records}")
    merged["affected"] = [
        {"data_subjects": None, "records": None, **{k: v for k, v in a.items() if k != "notified_at"},
         "notified_at": _iso(told.get(a.get("controller_id")))}
        for a in affected
    ]
    return breach_from_json(merged)


def breach_from_json(obj: Mapping[str, Any]) -> Breach:
    """A stored record back into a `Breach`; anything malformed raises `BreachInvalid`."""
    try:
        contact = obj.get("contact")
        return Breach(
            id=obj["id"], discovered_at=dt.datetime.fromisoformat(obj["discovered_at"]),
            affected=tuple(AffectedController(
                controller_id=a["controller_id"],
                data_subjects=None if a["data_subjects"] is None else Estimate(*a["data_subjects"]),
                records=None if a["records"] is None else Estimate(*a["records"]),
                notified_at=_time(a["notified_at"]),
            ) for a in obj["affected"]),
            occurred_from=_time(obj["occurred_from"]), occurred_until=_time(obj["occurred_until"]),
            nature=frozenset(BreachNature(v) for v in obj["nature"]), summary=obj["summary"], cause=obj["cause"],
            subject_categories=frozenset(SubjectCategory(v) for v in obj["subject_categories"]),
            data_classes=frozenset(DataClass(v) for v in obj["data_classes"]),
            contact=None if contact is None else ContactPoint(**contact),
            likely_consequences=obj["likely_consequences"], measures_taken=obj["measures_taken"],
            measures_proposed=obj["measures_proposed"], closed_at=_time(obj["closed_at"]),
            closure_note=obj["closure_note"],
        )
    except BreachInvalid:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RegisterError) as exc:
        raise BreachInvalid(f"malformed breach record: {exc!r}") from None
