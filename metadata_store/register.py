"""Register of processing activities (GDPR art. 30(2), agreement art. 6.1), generated from the schema.

`build_register` reads the store's schema declaration (`TABLES`: every column with its data class
and retention) plus the parties and the security settings from the config, and returns a JSON-ready
dict (see `REGISTER_SCHEMA`); `register_markdown` renders the same dict for people. Because a
published register is a document that can go stale, `validate_register` checks any register (a
fresh one or one loaded from a file) against the schema: every declared column must have an entry,
and no entry may name a column that is not declared.

Pure: no clock, no I/O. The parties (`ContactPoint`, `ProcessorInfo`, `ControllerInfo`) live here
and the breach register reuses them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from metadata_store.schema import PERSONAL, TABLES, Column, DataClass, Protection
from metadata_store.subprocessors import (
    EU_MEMBER_STATES,
    NO_TRANSFER_STATEMENT,
    SUBPROCESSORS_SCHEMA,
    SubProcessor,
    subprocessor_json,
)

REGISTER_FORMAT = "kijkmee-register-1"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class RegisterError(ValueError):
    """Party details or register settings are malformed; the message says which."""


@dataclass(frozen=True)
class ContactPoint:
    """Someone a party can be reached through: a DPO or another contact point (art. 30(2)(a), 33(3)(b))."""

    name: str
    """Name of the person or desk (e.g. "Functionaris gegevensbescherming")."""
    function: str = ""
    """Their role, e.g. "DPO" or "security officer"."""
    email: str = ""
    """E-mail address; at least one of email and phone is required."""
    phone: str = ""
    """Telephone number; at least one of email and phone is required."""

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise RegisterError("a contact point needs a name")
        if not (self.email.strip() or self.phone.strip()):
            raise RegisterError(f"contact point {self.name!r} needs an e-mail address or a phone number")
        if self.email and not re.fullmatch(r"[^@\s]+@[^@\s]+", self.email):
            raise RegisterError(f"contact point {self.name!r}: {self.email!r} is not an e-mail address")


@dataclass(frozen=True)
class ProcessorInfo:
    """The processor ("Verwerker") as the register and breach notifications name it."""

    name: str
    """Legal or trade name, e.g. "123meekijken (WeSeeDo B.V.)"."""
    address: str
    """Postal address of the establishment."""
    registration: str
    """Chamber of Commerce (KvK) number."""
    contact: ContactPoint
    """General contact for privacy matters."""
    dpo: ContactPoint | None = None
    """Data protection officer, when one is appointed (art. 37); the register says so when not."""
    representative: str = ""
    """Art. 27 representative; empty for a processor established in the EU."""

    def __post_init__(self) -> None:
        for field in ("name", "address", "registration"):
            if not getattr(self, field).strip():
                raise RegisterError(f"processor {field} is empty")


@dataclass(frozen=True)
class ControllerInfo:
    """A controller ("Verwerkingsverantwoordelijke") kijkmee processes personal data for."""

    id: str
    """The controller's id in kijkmee (API keys, exports, breach notifications)."""
    name: str
    """Legal name."""
    address: str = ""
    """Postal address."""
    contact: ContactPoint | None = None
    """Whom the processor contacts (breach notifications go here)."""
    dpo: ContactPoint | None = None
    """The controller's DPO, when it has told us one."""
    representative: str = ""
    """Art. 27 representative, where applicable."""

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.id):
            raise RegisterError(f"controller id {self.id!r} must be 1-64 letters, digits, '.', '_' or '-'")
        if not self.name.strip():
            raise RegisterError(f"controller {self.id!r} has no name")


@dataclass(frozen=True)
class RegisterSettings:
    """Facts from the config that the register states; each maps to article 5.3 or annex 2 items.

    Switches for features that must be built before they can be claimed default to off, so the
    register never claims a measure nobody turned on.
    """

    tls_minimum: str = "1.2"
    """Lowest TLS version accepted on HTTPS, WSS and TURN-TLS: "1.2" or "1.3"."""
    retention_days: int = 90
    """Days before session rows are anonymised (the agreement allows three months)."""
    anonymise_after_retention: bool = True
    """Rows are anonymised (not just kept) when retention ends."""
    max_peer_to_peer: int = 3
    """Largest call; calls up to this size are a peer-to-peer mesh."""
    relay_encrypted_only: bool = True
    """The TURN relay forwards only DTLS/SRTP and drops anything else (RFC 7983 classes)."""
    own_infrastructure_only: bool = True
    """Browsers are handed only our own STUN/TURN and load nothing from third-party hosts."""
    logs_without_personal_data: bool = True
    """Access and application logs hold no IP address, name, SDP or user agent."""
    encryption_at_rest_per_controller_keys: bool = False
    """Personal data at rest (database and backups) is encrypted with a key per controller."""
    offboarding_deletion: bool = False
    """A controller's data (backups included, by destroying its key) is deleted within a month of the end."""
    audit_log: bool = False
    """Every read and write of personal data is logged with operator and time in a hash-chained log."""
    operator_2fa: bool = False
    """Operator accounts need a TOTP second factor."""
    operator_password_policy: bool = False
    """Operator passwords are checked for length and stored with scrypt."""
    operator_roles: bool = False
    """Operator rights follow a role x action matrix in code."""
    login_lockout: bool = False
    """Repeated failed logins lock the account for a while (annex 2's Fail2ban)."""
    backups_tested: bool = False
    """Backups are made and a verified restore is exercised."""
    datacentre_certifications: tuple[str, ...] = ()
    """Certifications of the data centres used, e.g. ("ISO 27001", "NEN 7510")."""
    monitoring_24x7: bool = False
    """Servers are watched around the clock (organisational)."""
    hosting_country: str = "NL"
    """Where the processor's own servers are: an EU member state (ISO 3166-1 alpha-2)."""
    subprocessors: tuple[SubProcessor, ...] = ()
    """Other processors engaged (see `metadata_store.subprocessors`); empty means none."""

    def __post_init__(self) -> None:
        if self.tls_minimum not in ("1.2", "1.3"):
            raise RegisterError(f"tls_minimum must be 1.2 or 1.3, not {self.tls_minimum!r}")
        if self.retention_days < 1:
            raise RegisterError("retention_days must be at least 1")
        if not 1 <= self.max_peer_to_peer <= 3:
            raise RegisterError("max_peer_to_peer must be 1 to 3")
        if self.hosting_country not in EU_MEMBER_STATES:
            raise RegisterError(
                f"hosting_country {self.hosting_country!r} is not an EU member state: the agreement "
                "(art. 4.3) allows no transfer outside the European Union"
            )


DATA_CLASS_LABELS: dict[DataClass, str] = {
    DataClass.IP: "IP address",
    DataClass.TYPED_NAME: "name the person typed",
    DataClass.TYPED_PHONE: "phone number the person typed",
    DataClass.TYPED_EMAIL: "e-mail address the person typed",
    DataClass.PSEUDONYMOUS_ID: "pseudonymous visitor number",
    DataClass.TELEMETRY: "call quality telemetry (no personal data)",
    DataClass.OPERATIONAL: "ids, times and states (no personal data on their own)",
}
"""Words for each data class in registers and notifications."""

SUBJECTS = ("medewerkers van klanten (controller's staff)", "klanten van klanten (controller's customers)")
"""Annex 1 part 2: the categories of data subjects."""


@dataclass(frozen=True)
class ProcessingCategory:
    """One category of processing carried out for every controller (art. 30(2)(b))."""

    id: str
    """Stable id; for a stored category the table name."""
    name: str
    """English name."""
    name_nl: str
    """Dutch name, as the agreement's language."""
    purpose: str
    """What the processing is for."""
    data_subjects: tuple[str, ...] = SUBJECTS
    """Whose data it is; empty when it holds no personal data."""


TABLE_CATEGORIES: dict[str, ProcessingCategory] = {
    "rooms": ProcessingCategory(
        "rooms", "call links", "gesprekslinks",
        "create call links and let people join while the link is valid; holds no personal data", (),
    ),
    "sessions": ProcessingCategory(
        "sessions", "call signalling and session metadata", "signalering en sessiegegevens",
        "admit at most three people to a call and record who joined from which address, with the name, "
        "phone number or e-mail address only when the person typed one, encrypted with the controller's "
        "key, until the row is anonymised",
    ),
    "controllers": ProcessingCategory(
        "controllers", "controller administration", "administratie van verwerkingsverantwoordelijken",
        "know which business each call link belongs to and when its service ends; holds no personal data",
        (),
    ),
    "visits": ProcessingCategory(
        "visits", "anonymous usage statistics", "anonieme gebruiksstatistiek",
        "after the retention period, keep a random visitor number with the call's day, rounded duration, "
        "size, route and set-up time; it links to no person or session",
        (),
    ),
    "subject_requests": ProcessingCategory(
        "subject_requests", "data-subject requests", "verzoeken van betrokkenen",
        "record each request the controller passed on (art. 15-22), its one-month deadline and its outcome, "
        "by session id only",
    ),
    "audit_log": ProcessingCategory(
        "audit_log", "audit log", "auditlog",
        "trace every read and write of personal data to an operator, the API or a job, by id only",
        (),
    ),
    "api_keys": ProcessingCategory(
        "api_keys", "controller API keys", "API-sleutels van verwerkingsverantwoordelijken",
        "let a controller's own systems create and end call links; only a hash of each key is kept",
        (),
    ),
    "operators": ProcessingCategory(
        "operators", "operator accounts", "beheerdersaccounts",
        "let the processor's staff sign in with a password and a second factor, in a role; holds no data "
        "of the controllers' data subjects",
        (),
    ),
    "breaches": ProcessingCategory(
        "breaches", "breach register", "register van datalekken",
        "record personal data breaches and their notification to controllers within 48 hours (art. 33); "
        "numbers and categories, never subjects' data",
        (),
    ),
}
"""Processing described per table; a table without an entry makes `validate_register` complain."""

TRANSIENT_CATEGORIES: tuple[ProcessingCategory, ...] = (
    ProcessingCategory(
        "signalling-exchange", "connection set-up between participants", "opbouw van de verbinding",
        "pass session descriptions and network candidates (which hold IP addresses) between the "
        "participants of one call; held in memory only and never stored",
    ),
    ProcessingCategory(
        "media-relay", "relaying encrypted media", "doorgeven van versleutelde media",
        "forward end-to-end encrypted media when no direct path exists; the relay cannot read it and "
        "keeps IP addresses in memory for the allocation's lifetime only",
    ),
)
"""Processing that stores nothing, so no table describes it."""

REFERENCES: dict[str, tuple[str, str]] = {
    "2.3": ("art. 2.3", "zonder daarvan een kopie achter te houden"),
    "4.3": ("art. 4.3", "buiten de Europese Unie"),
    "5.3-metadata": ("art. 5.3", "zoals IP-adressen, verwerkt en opgeslagen"),
    "5.3-retention": ("art. 5.3", "maximaal drie (3) maanden"),
    "5.3-p2p": ("art. 5.3", "peer-to-peer (video)gesprekken"),
    "5.3-e2e": ("art. 5.3", "end-to-end versleuteld"),
    "5.3-tls": ("art. 5.3", "minimaal TLS 1.2"),
    "5.3-datacentres": ("art. 5.3", "ISO 27001 en NEN 7510"),
    "5.3-monitoring": ("art. 5.3", "24 uur per dag"),
    "B2.2-matrix": ("bijlage 2 §2 Digitale toegangscontrole", "autorisatiematrix"),
    "B2.2-passwords": ("bijlage 2 §2 Digitale toegangscontrole", "wachtwoordbeleid (lengte, opmaak, roulatie)"),
    "B2.2-2fa": ("bijlage 2 §2 Digitale toegangscontrole", "meerfactorauthenticatie (2FA)"),
    "B2.2-connections": ("bijlage 2 §2 Digitale toegangscontrole", "gebruik van beveiligde verbindingen"),
    "B2.2-fail2ban": ("bijlage 2 §2 Digitale toegangscontrole", "Fail2ban"),
    "B2.3-authorisation": ("bijlage 2 §3 Toegangscontrole persoonsgegevens", "hanteren van een autorisatiesysteem"),
    "B2.3-data-access": ("bijlage 2 §3 Toegangscontrole persoonsgegevens", "registreren van toegangen tot gegevens"),
    "B2.3-storage": ("bijlage 2 §3 Toegangscontrole persoonsgegevens", "veilige opslag van gegevensdragers"),
    "B2.4-tls": ("bijlage 2 §4 Doorgiftecontrole", "gebruik van SSL-/TLS-verbindingen"),
    "B2.5-traceability": (
        "bijlage 2 §5 Invoeringscontrole", "traceerbaarheid van invoering, wijziging of verwijdering",
    ),
    "B2.5-timestamps": ("bijlage 2 §5 Invoeringscontrole", "time stamping van verwerkingen"),
    "B2.5-rights": ("bijlage 2 §5 Invoeringscontrole", "hanteren van gebruikersrechten"),
    "B2.6-destruction": ("bijlage 2 §6 Opdrachtcontrole", "vernietiging van de gegevens na beëindiging van de dienst"),
    "B2.7-backup-plan": ("bijlage 2 §7 Beschikbaarheidscontrole", "back-up- en een herstelplan"),
    "B2.7-backup-tests": ("bijlage 2 §7 Beschikbaarheidscontrole", "tests van back-ups en dataherstel"),
}
"""Clauses of the agreement a measure answers: id -> (clause, the agreement's own words)."""


def _measures(s: RegisterSettings) -> list[tuple[str, str, bool, tuple[str, ...]]]:
    """(id, description, in place, reference ids) for every measure the register states."""
    certs = " and ".join(s.datacentre_certifications) or "none recorded"
    return [
        ("data-minimisation", "The store's schema is an allowlist: only IP addresses, names people typed "
         "and operational facts are stored; call content is never stored.", True, ("5.3-metadata",)),
        ("retention", f"Session rows are anonymised after {s.retention_days} days.",
         s.retention_days <= 90 and s.anonymise_after_retention, ("5.3-retention",)),
        ("tls", f"TLS {s.tls_minimum} minimum on HTTPS, WSS and TURN-TLS; plain HTTP only redirects.", True,
         ("5.3-tls", "B2.2-connections", "B2.4-tls")),
        ("peer-to-peer", f"Calls of up to {s.max_peer_to_peer} people are peer-to-peer and end-to-end "
         "encrypted (DTLS-SRTP).", True, ("5.3-p2p", "5.3-e2e")),
        ("encrypted-only-relay", "The relay forwards only encrypted media (DTLS/SRTP) and cannot read it.",
         s.relay_encrypted_only, ("5.3-e2e", "B2.4-tls")),
        ("own-infrastructure", "Browsers reach only the processor's own servers: no public STUN, no CDN, "
         "no third-party scripts.", s.own_infrastructure_only, ("4.3",)),
        ("logs-without-personal-data", "Logs hold no IP addresses, names, session descriptions or user agents.",
         s.logs_without_personal_data, ("5.3-metadata",)),
        ("encryption-at-rest", "Personal data at rest, backups included, is encrypted with a key per controller.",
         s.encryption_at_rest_per_controller_keys, ("B2.3-storage",)),
        ("offboarding", "At the end of service a controller's data is deleted within one month and its key "
         "destroyed, so no copy remains readable.", s.offboarding_deletion, ("2.3", "B2.6-destruction")),
        ("audit-log", "Every read and write of personal data is logged with operator and timestamp in a "
         "hash-chained audit log.", s.audit_log, ("B2.3-data-access", "B2.5-traceability", "B2.5-timestamps")),
        ("operator-2fa", "Operators sign in with a password and a TOTP second factor.", s.operator_2fa,
         ("B2.2-2fa",)),
        ("password-policy", "Operator passwords have a minimum length and are stored with scrypt.",
         s.operator_password_policy, ("B2.2-passwords",)),
        ("roles", "Operator rights follow a role x action matrix.", s.operator_roles,
         ("B2.2-matrix", "B2.3-authorisation", "B2.5-rights")),
        ("login-lockout", "Repeated failed sign-ins lock the account for a while.", s.login_lockout,
         ("B2.2-fail2ban",)),
        ("backups", "Backups are made and restoring them is tested.", s.backups_tested,
         ("B2.7-backup-plan", "B2.7-backup-tests")),
        ("datacentres", f"Data centre certifications: {certs}.", bool(s.datacentre_certifications),
         ("5.3-datacentres",)),
        ("monitoring", "Servers are monitored 24 hours a day, 7 days a week.", s.monitoring_24x7,
         ("5.3-monitoring",)),
    ]


def _contact_json(c: ContactPoint | None) -> dict[str, str] | None:
    if c is None:
        return None
    return {"name": c.name, "function": c.function, "email": c.email, "phone": c.phone}


def processor_json(p: ProcessorInfo) -> dict[str, Any]:
    """The processor's details as the register and breach notifications show them."""
    return {
        "name": p.name, "address": p.address, "registration": p.registration,
        "contact": _contact_json(p.contact), "dpo": _contact_json(p.dpo), "representative": p.representative,
    }


def _column_json(table: str, c: Column) -> dict[str, Any]:
    return {
        "table": table, "column": c.name, "data_class": c.data_class.value,
        "personal": c.data_class in PERSONAL, "retention": c.retention, "nullable": c.nullable,
        "description": c.description, "protection": c.protection.value,
    }


def _summary(cat: ProcessingCategory, columns: Sequence[dict[str, Any]]) -> str:
    personal = [f"{DATA_CLASS_LABELS[DataClass(c['data_class'])]} ({c['table']}.{c['column']}, "
                f"data class {c['data_class']})" for c in columns if c["personal"]]
    other = [c["column"] for c in columns if not c["personal"]]
    parts = [", ".join(personal) if personal else "no personal data"]
    if other:
        parts.append("also " + ", ".join(other) + " (no personal data)")
    return f"{cat.name}: " + "; ".join(parts)


def _category_json(cat: ProcessingCategory, columns: Sequence[dict[str, Any]] | None) -> dict[str, Any]:
    cols = list(columns or ())
    return {
        "id": cat.id, "name": cat.name, "name_nl": cat.name_nl, "purpose": cat.purpose,
        "data_subjects": list(cat.data_subjects), "stored": columns is not None,
        "summary": _summary(cat, cols) if columns is not None else f"{cat.name}: {cat.purpose}",
        "columns": cols,
    }


def build_register(
    *,
    processor: ProcessorInfo,
    controllers: Sequence[ControllerInfo],
    settings: RegisterSettings,
    tables: Mapping[str, Sequence[Column]] = TABLES,
) -> dict[str, Any]:
    """The art. 30(2) register as a JSON-ready dict (`REGISTER_SCHEMA`); raises `RegisterError`."""
    ids = [c.id for c in controllers]
    if len(set(ids)) != len(ids):
        raise RegisterError("the same controller id appears twice")
    categories = []
    for table, cols in tables.items():
        cat = TABLE_CATEGORIES.get(table) or ProcessingCategory(table, table, table, "", ())
        categories.append(_category_json(cat, [_column_json(table, c) for c in cols]))
    categories += [_category_json(cat, None) for cat in TRANSIENT_CATEGORIES]
    category_ids = [c["id"] for c in categories]
    return {
        "format": REGISTER_FORMAT,
        "title": "Register van verwerkingsactiviteiten (register of processing activities), AVG/GDPR art. 30(2)",
        "processor": processor_json(processor),
        "controllers": [
            {"id": c.id, "name": c.name, "address": c.address, "contact": _contact_json(c.contact),
             "dpo": _contact_json(c.dpo), "representative": c.representative, "categories": category_ids}
            for c in controllers
        ],
        "categories_of_processing": categories,
        "transfers": {
            "outside_eu": False, "third_countries": [], "statement": NO_TRANSFER_STATEMENT,
            "hosting_country": settings.hosting_country,
            "subprocessors": [subprocessor_json(s) for s in sorted(settings.subprocessors, key=lambda s: s.name)],
        },
        "security_measures": [
            {"id": mid, "description": text, "in_place": in_place,
             "references": [{"id": r, "clause": REFERENCES[r][0], "quote": REFERENCES[r][1]} for r in refs]}
            for mid, text, in_place, refs in _measures(settings)
        ],
    }


def _entries(register: Mapping[str, Any], problems: list[str]) -> list[tuple[str, Mapping[str, Any]]]:
    """(category id, column entry) pairs; malformed parts become problems instead of exceptions."""
    out: list[tuple[str, Mapping[str, Any]]] = []
    categories = register.get("categories_of_processing")
    if not isinstance(categories, list):
        problems.append("register has no list of categories_of_processing")
        return out
    for cat in categories:
        if not isinstance(cat, Mapping) or not isinstance(cat.get("columns"), list):
            problems.append("a category of processing is malformed")
            continue
        if not str(cat.get("purpose", "")).strip():
            problems.append(f"category {cat.get('id')!r} has no purpose (describe it in TABLE_CATEGORIES)")
        for entry in cat["columns"]:
            if isinstance(entry, Mapping) and isinstance(entry.get("table"), str) and \
                    isinstance(entry.get("column"), str):
                out.append((str(cat.get("id")), entry))
            else:
                problems.append(f"category {cat.get('id')!r} has a malformed column entry")
    return out


def _check_transfers(register: Mapping[str, Any], problems: list[str]) -> None:
    transfers = register.get("transfers")
    if not isinstance(transfers, Mapping):
        problems.append("register has no transfers section")
        return
    if transfers.get("outside_eu") is not False or transfers.get("third_countries"):
        problems.append("register states a transfer outside the EU (agreement art. 4.3 forbids it)")
    if transfers.get("hosting_country") not in EU_MEMBER_STATES:
        problems.append(f"hosting country {transfers.get('hosting_country')!r} is not an EU member state")
    for sub in transfers.get("subprocessors") or ():
        if not isinstance(sub, Mapping) or sub.get("country") not in EU_MEMBER_STATES:
            name = sub.get("name") if isinstance(sub, Mapping) else sub
            problems.append(f"sub-processor {name!r} is not located in an EU member state")


def validate_register(register: Mapping[str, Any], tables: Mapping[str, Sequence[Column]] = TABLES) -> list[str]:
    """What is wrong with `register` against the schema declaration; empty when it is complete.

    Every declared column must have exactly one entry with its data class and retention; no entry may
    name an undeclared column; no transfer outside the EU may be stated.
    """
    problems: list[str] = []
    declared = {(t, c.name): c for t, cols in tables.items() for c in cols}
    seen: set[tuple[str, str]] = set()
    for cat_id, entry in _entries(register, problems):
        key = (entry["table"], entry["column"])
        where = f"{key[0]}.{key[1]}"
        column = declared.get(key)
        if column is None:
            problems.append(f"register entry {where} (category {cat_id}) refers to no declared column")
            continue
        if key in seen:
            problems.append(f"column {where} appears more than once in the register")
        seen.add(key)
        if entry.get("data_class") != column.data_class.value:
            problems.append(f"column {where}: register says data class {entry.get('data_class')!r}, "
                            f"schema says {column.data_class.value!r}")
        if entry.get("retention") != column.retention:
            problems.append(f"column {where}: register says retention {entry.get('retention')!r}, "
                            f"schema says {column.retention!r}")
    problems += [f"column {t}.{c} is declared in the schema but missing from the register"
                 for (t, c) in declared if (t, c) not in seen]
    _check_transfers(register, problems)
    return problems


def _contact_md(c: Mapping[str, Any] | None) -> str:
    if not c:
        return "none recorded"
    bits = [c.get("name", ""), c.get("function", ""), c.get("email", ""), c.get("phone", "")]
    return ", ".join(_md(str(b)) for b in bits if b)


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell or line: no pipes or line breaks split it."""
    return " ".join(text.replace("|", "\\|").split())


def _md_parties(reg: Mapping[str, Any]) -> list[str]:
    p = reg["processor"]
    lines = ["## Verwerker (processor)", "",
             f"- **{_md(p['name'])}**, {_md(p['address'])}, KvK {_md(p['registration'])}",
             f"- Contact: {_contact_md(p['contact'])}",
             f"- Functionaris gegevensbescherming (DPO): {_contact_md(p['dpo'])}", "",
             "## Verwerkingsverantwoordelijken (controllers)", ""]
    if not reg["controllers"]:
        lines.append("- none yet")
    for c in reg["controllers"]:
        lines.append(f"- **{_md(c['name'])}** (`{c['id']}`), {_md(c['address']) or 'no address recorded'}; "
                     f"contact: {_contact_md(c['contact'])}; DPO: {_contact_md(c['dpo'])}; "
                     f"categories: {', '.join(c['categories'])}")
    return [*lines, ""]


def _md_categories(reg: Mapping[str, Any]) -> list[str]:
    lines = ["## Categorieën van verwerkingen (categories of processing)", "",
             "Carried out on behalf of every controller listed above.", ""]
    for cat in reg["categories_of_processing"]:
        lines += [f"### {_md(cat['name_nl'])} ({_md(cat['name'])})", "", _md(cat["purpose"]) or "(no purpose)", ""]
        subjects = ", ".join(cat["data_subjects"]) or "none (no personal data)"
        lines += [f"Betrokkenen (data subjects): {_md(subjects)}", ""]
        if not cat["stored"]:
            lines += ["Nothing of this processing is stored.", ""]
            continue
        lines += ["| table | column | data class | personal | retention | description |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {e['table']} | {e['column']} | {e['data_class']} | {'yes' if e['personal'] else 'no'} "
                  f"| {_md(e['retention'])} | {_md(e['description'])} |" for e in cat["columns"]]
        lines.append("")
    return lines


def register_markdown(register: Mapping[str, Any]) -> str:
    """The register for people: every column with its data class and retention, every measure."""
    t = register["transfers"]
    lines = [f"# {register['title']}", "", *_md_parties(register), *_md_categories(register),
             "## Doorgifte (transfers to third countries)", "", _md(t["statement"]), "",
             f"- Hosting: own servers in {t['hosting_country']}"]
    if not t["subprocessors"]:
        lines.append("- Subverwerkers (sub-processors): none")
    lines += [f"- Subverwerker (sub-processor): {_md(s['name'])}, {_md(s['purpose'])}, {s['country']} (EU), "
              f"data: {', '.join(s['data_classes'])}, since {s['since']}" for s in t["subprocessors"]]
    lines += ["", "## Beveiligingsmaatregelen (security measures)", "",
              "| measure | in place | agreement |", "|---|---|---|"]
    for m in register["security_measures"]:
        refs = "; ".join(f"{r['clause']}: “{r['quote']}”" for r in m["references"])
        lines.append(f"| {_md(m['description'])} | {'yes' if m['in_place'] else 'no'} | {_md(refs)} |")
    return "\n".join(lines) + "\n"


def _contact_schema() -> dict[str, Any]:
    return {"oneOf": [{"type": "null"}, {
        "type": "object", "additionalProperties": False, "required": ["name", "function", "email", "phone"],
        "properties": {k: {"type": "string"} for k in ("name", "function", "email", "phone")},
    }]}


def _object(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": sorted(props), "properties": props}


_STR = {"type": "string"}
_STRS = {"type": "array", "items": _STR}
_COLUMN_SCHEMA = _object({
    "table": _STR, "column": _STR, "data_class": {"enum": [c.value for c in DataClass]},
    "personal": {"type": "boolean"}, "retention": {"type": "string", "minLength": 1},
    "nullable": {"type": "boolean"}, "description": _STR,
    "protection": {"enum": [p.value for p in Protection]},
})

REGISTER_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://kijkmee.invalid/schemas/register-1.json",
    "title": "kijkmee register of processing activities (GDPR art. 30(2))",
    **_object({
        "format": {"const": REGISTER_FORMAT},
        "title": _STR,
        "processor": _object({"name": _STR, "address": _STR, "registration": _STR, "contact": _contact_schema(),
                              "dpo": _contact_schema(), "representative": _STR}),
        "controllers": {"type": "array", "items": _object({
            "id": {"type": "string", "pattern": "^" + _ID.pattern + "$"}, "name": _STR, "address": _STR,
            "contact": _contact_schema(), "dpo": _contact_schema(), "representative": _STR, "categories": _STRS,
        })},
        "categories_of_processing": {"type": "array", "minItems": 1, "items": _object({
            "id": _STR, "name": _STR, "name_nl": _STR, "purpose": _STR, "data_subjects": _STRS,
            "stored": {"type": "boolean"}, "summary": _STR, "columns": {"type": "array", "items": _COLUMN_SCHEMA},
        })},
        "transfers": _object({
            "outside_eu": {"const": False}, "third_countries": {"type": "array", "maxItems": 0},
            "statement": _STR, "hosting_country": {"enum": sorted(EU_MEMBER_STATES)},
            "subprocessors": SUBPROCESSORS_SCHEMA["properties"]["subprocessors"],
        }),
        "security_measures": {"type": "array", "items": _object({
            "id": _STR, "description": _STR, "in_place": {"type": "boolean"},
            "references": {"type": "array", "minItems": 1, "items": _object({
                "id": {"enum": sorted(REFERENCES)}, "clause": _STR, "quote": _STR})},
        })},
    }),
}
"""Published JSON Schema (draft 2020-12) of `build_register`'s output."""
