"""The store's schema as an allowlist: every column, its data class and how long it is kept.

The register of processing and the retention job are generated from this declaration, and a test
compares it with the live database, so a column cannot appear without being declared here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class DataClass(enum.Enum):
    """What kind of data a column holds, in the agreement's terms (article 5.3)."""

    IP = "ip"
    """An IP address: the only metadata the agreement lets us keep about a person."""
    TYPED_NAME = "typed-name"
    """A name the person typed themselves."""
    TYPED_PHONE = "typed-phone"
    TYPED_EMAIL = "typed-email"
    PSEUDONYMOUS_ID = "pseudonymous-id"
    TELEMETRY = "telemetry"
    """Call quality facts that hold no personal data (route, setup time)."""
    OPERATIONAL = "operational"
    """Ids, timestamps and states needed to run the service; no personal data on their own."""


PERSONAL = frozenset({DataClass.IP, DataClass.TYPED_NAME, DataClass.TYPED_PHONE, DataClass.TYPED_EMAIL})


class Protection(enum.Enum):
    """How a column's values are kept at rest."""

    PLAIN = "plain"
    ENCRYPTED = "aes-256-gcm"
    """Encrypted with the controller's data key; unreadable once that key is destroyed."""
    KEYED_HASH = "hmac-sha256"
    """A blind index (keyed hash of the normalised value) so a subject can be found without plaintext."""


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    """Portable type: TEXT, INTEGER, BLOB or TIMESTAMP (ISO 8601 UTC text in SQLite)."""
    data_class: DataClass
    retention: str
    """In words, as the register of processing shows it."""
    nullable: bool = False
    description: str = ""
    protection: Protection = Protection.PLAIN


UNTIL_ANONYMISED = "until the session is anonymised (at most 90 days, never more than 3 months)"
WHILE_CUSTOMER = "while the controller is a customer; deleted at the end of the offboarding grace period"
UNTIL_LINK_EXPIRES = "until the link expires, then with the controller"


def _personal(name: str, data_class: DataClass, what: str, nullable: bool = True) -> tuple[Column, Column]:
    """A personal value: its ciphertext and its blind index."""
    return (
        Column(name, "BLOB", data_class, UNTIL_ANONYMISED, nullable=nullable,
               description=what, protection=Protection.ENCRYPTED),
        Column(f"{name}_index", "TEXT", data_class, UNTIL_ANONYMISED, nullable=nullable,
               description=f"keyed hash of the {name}, to find a data subject", protection=Protection.KEYED_HASH),
    )


TABLES: dict[str, tuple[Column, ...]] = {
    "controllers": (
        Column("id", "TEXT", DataClass.OPERATIONAL, WHILE_CUSTOMER, description="short id of the business"),
        Column("name", "TEXT", DataClass.OPERATIONAL, WHILE_CUSTOMER, description="the business's name"),
        Column("created_at", "TIMESTAMP", DataClass.OPERATIONAL, WHILE_CUSTOMER),
        Column("status", "TEXT", DataClass.OPERATIONAL, WHILE_CUSTOMER, description="active, offboarding or deleted"),
        Column("offboarding_at", "TIMESTAMP", DataClass.OPERATIONAL, WHILE_CUSTOMER, nullable=True,
               description="when the end of service was registered"),
        Column("delete_after", "TIMESTAMP", DataClass.OPERATIONAL, WHILE_CUSTOMER, nullable=True,
               description="end of the grace period (at most one calendar month)"),
        Column("deleted_at", "TIMESTAMP", DataClass.OPERATIONAL, WHILE_CUSTOMER, nullable=True,
               description="when everything of the controller was deleted and its key destroyed"),
    ),
    "rooms": (
        Column("id", "TEXT", DataClass.OPERATIONAL, UNTIL_LINK_EXPIRES, description="random room id"),
        Column("controller_id", "TEXT", DataClass.OPERATIONAL, UNTIL_LINK_EXPIRES),
        Column("created_at", "TIMESTAMP", DataClass.OPERATIONAL, UNTIL_LINK_EXPIRES),
        Column("expires_at", "TIMESTAMP", DataClass.OPERATIONAL, UNTIL_LINK_EXPIRES),
        Column("capacity", "INTEGER", DataClass.OPERATIONAL, UNTIL_LINK_EXPIRES, description="most people, 1 to 3"),
        Column("relay_only", "INTEGER", DataClass.OPERATIONAL, UNTIL_LINK_EXPIRES,
               description="1: media always through the relay, so participants never see each other's IP"),
        Column("ask", "TEXT", DataClass.OPERATIONAL, UNTIL_LINK_EXPIRES,
               description="what the join form asks: none, name, phone or name+phone"),
        Column("embed_origins", "TEXT", DataClass.OPERATIONAL, UNTIL_LINK_EXPIRES, nullable=True,
               description="origins allowed to frame the call, space-separated"),
        Column("extend", "INTEGER", DataClass.OPERATIONAL, UNTIL_LINK_EXPIRES,
               description="1: the link lives on after each use; 0: it ends at expires_at"),
    ),
    "sessions": (
        Column("id", "INTEGER", DataClass.OPERATIONAL, UNTIL_ANONYMISED, description="row number"),
        Column("controller_id", "TEXT", DataClass.OPERATIONAL, UNTIL_ANONYMISED),
        Column("room_id", "TEXT", DataClass.OPERATIONAL, UNTIL_ANONYMISED),
        *_personal("ip", DataClass.IP, "address the participant joined from", nullable=False),
        *_personal("name", DataClass.TYPED_NAME, "only when the participant typed one"),
        *_personal("phone", DataClass.TYPED_PHONE, "only when the participant typed one"),
        *_personal("email", DataClass.TYPED_EMAIL, "only when the participant typed one"),
        Column("joined_at", "TIMESTAMP", DataClass.OPERATIONAL, UNTIL_ANONYMISED),
        Column("left_at", "TIMESTAMP", DataClass.OPERATIONAL, UNTIL_ANONYMISED, nullable=True),
        Column("participants", "INTEGER", DataClass.TELEMETRY, UNTIL_ANONYMISED, nullable=True,
               description="most people in the call while this participant was in it"),
        Column("route", "TEXT", DataClass.TELEMETRY, UNTIL_ANONYMISED, nullable=True,
               description="direct or relay, as the browser reported it"),
        Column("setup_ms", "INTEGER", DataClass.TELEMETRY, UNTIL_ANONYMISED, nullable=True,
               description="time from joining to the first media, as the browser reported it"),
        Column("restricted_at", "TIMESTAMP", DataClass.OPERATIONAL, UNTIL_ANONYMISED, nullable=True,
               description="set when the subject asked for restriction (art. 18): kept, not processed"),
    ),
    "visits": (
        Column("visitor", "TEXT", DataClass.TELEMETRY, "kept: anonymous",
               description="a fresh random number per anonymised session; links to nothing"),
        Column("day", "TEXT", DataClass.TELEMETRY, "kept: anonymous", description="UTC date of the call"),
        Column("duration_minutes", "INTEGER", DataClass.TELEMETRY, "kept: anonymous", nullable=True,
               description="rounded to 5 minutes"),
        Column("participants", "INTEGER", DataClass.TELEMETRY, "kept: anonymous", nullable=True),
        Column("route", "TEXT", DataClass.TELEMETRY, "kept: anonymous", nullable=True),
        Column("setup_ms", "INTEGER", DataClass.TELEMETRY, "kept: anonymous", nullable=True,
               description="rounded to 100 ms"),
    ),
    "subject_requests": (
        Column("id", "TEXT", DataClass.OPERATIONAL, WHILE_CUSTOMER, description="random request id"),
        Column("controller_id", "TEXT", DataClass.OPERATIONAL, WHILE_CUSTOMER),
        Column("kind", "TEXT", DataClass.OPERATIONAL, WHILE_CUSTOMER,
               description="access, export, rectify, erase or restrict"),
        Column("received_at", "TIMESTAMP", DataClass.OPERATIONAL, WHILE_CUSTOMER),
        Column("deadline", "TIMESTAMP", DataClass.OPERATIONAL, WHILE_CUSTOMER,
               description="one month after receipt (art. 12(3))"),
        Column("completed_at", "TIMESTAMP", DataClass.OPERATIONAL, WHILE_CUSTOMER, nullable=True),
        Column("handled_by", "TEXT", DataClass.OPERATIONAL, WHILE_CUSTOMER, nullable=True,
               description="operator user name"),
        Column("session_ids", "TEXT", DataClass.PSEUDONYMOUS_ID, WHILE_CUSTOMER, nullable=True,
               description="the sessions the request covered (ids only)"),
        Column("outcome", "TEXT", DataClass.OPERATIONAL, WHILE_CUSTOMER, nullable=True,
               description="counts and actions for the controller's report; no names or addresses"),
    ),
    "audit_log": (
        Column("seq", "INTEGER", DataClass.OPERATIONAL, "kept: evidence for audits", description="position"),
        Column("at", "TIMESTAMP", DataClass.OPERATIONAL, "kept: evidence for audits"),
        Column("actor", "TEXT", DataClass.OPERATIONAL, "kept: evidence for audits",
               description="operator user name, api:<controller> or job:<name>"),
        Column("action", "TEXT", DataClass.OPERATIONAL, "kept: evidence for audits"),
        Column("object_id", "TEXT", DataClass.PSEUDONYMOUS_ID, "kept: evidence for audits",
               description="id of what was touched; never a name or address"),
        Column("prev_hash", "TEXT", DataClass.OPERATIONAL, "kept: evidence for audits"),
        Column("hash", "TEXT", DataClass.OPERATIONAL, "kept: evidence for audits"),
    ),
    "api_keys": (
        Column("id", "TEXT", DataClass.OPERATIONAL, WHILE_CUSTOMER, description="public part of the key"),
        Column("controller_id", "TEXT", DataClass.OPERATIONAL, WHILE_CUSTOMER),
        Column("secret_hash", "TEXT", DataClass.OPERATIONAL, WHILE_CUSTOMER, description="SHA-256 of the secret part"),
        Column("label", "TEXT", DataClass.OPERATIONAL, WHILE_CUSTOMER, description="what the controller uses it for"),
        Column("created_at", "TIMESTAMP", DataClass.OPERATIONAL, WHILE_CUSTOMER),
        Column("revoked_at", "TIMESTAMP", DataClass.OPERATIONAL, WHILE_CUSTOMER, nullable=True),
    ),
    "operators": (
        Column("username", "TEXT", DataClass.OPERATIONAL, "while the account exists"),
        Column("role", "TEXT", DataClass.OPERATIONAL, "while the account exists"),
        Column("password_hash", "TEXT", DataClass.OPERATIONAL, "while the account exists", description="scrypt"),
        Column("totp_secret", "BLOB", DataClass.OPERATIONAL, "while the account exists",
               description="second factor seed, encrypted with the service key", protection=Protection.ENCRYPTED),
        Column("totp_last_step", "INTEGER", DataClass.OPERATIONAL, "while the account exists", nullable=True,
               description="time step of the last accepted code, so a code works once"),
        Column("created_at", "TIMESTAMP", DataClass.OPERATIONAL, "while the account exists"),
        Column("disabled_at", "TIMESTAMP", DataClass.OPERATIONAL, "while the account exists", nullable=True),
    ),
    "breaches": (
        Column("id", "TEXT", DataClass.OPERATIONAL, "kept: evidence for the supervisory authority"),
        Column("discovered_at", "TIMESTAMP", DataClass.OPERATIONAL, "kept: evidence for the supervisory authority"),
        Column("document", "TEXT", DataClass.OPERATIONAL, "kept: evidence for the supervisory authority",
               description="the breach record (AP form fields) as JSON; counts, never subjects' data"),
        Column("updated_at", "TIMESTAMP", DataClass.OPERATIONAL, "kept: evidence for the supervisory authority"),
    ),
}

PERSONAL_COLUMNS = ("ip", "name", "phone", "email")
"""The personal values of a session, each an encrypted column with a blind index beside it."""
