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


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str
    """Portable type: TEXT, INTEGER or TIMESTAMP (ISO 8601 UTC text in SQLite)."""
    data_class: DataClass
    retention: str
    """In words, as the register of processing shows it."""
    nullable: bool = False
    description: str = ""


UNTIL_ANONYMISED = "until the session is anonymised (at most 90 days)"

TABLES: dict[str, tuple[Column, ...]] = {
    "rooms": (
        Column("id", "TEXT", DataClass.OPERATIONAL, "until the link expires", description="random room id"),
        Column("created_at", "TIMESTAMP", DataClass.OPERATIONAL, "until the link expires"),
        Column("expires_at", "TIMESTAMP", DataClass.OPERATIONAL, "until the link expires"),
    ),
    "sessions": (
        Column("id", "INTEGER", DataClass.OPERATIONAL, UNTIL_ANONYMISED, description="row number"),
        Column("room_id", "TEXT", DataClass.OPERATIONAL, UNTIL_ANONYMISED),
        Column("ip", "TEXT", DataClass.IP, UNTIL_ANONYMISED, description="address the participant joined from"),
        Column(
            "name", "TEXT", DataClass.TYPED_NAME, UNTIL_ANONYMISED, nullable=True,
            description="only when the participant typed one",
        ),
        Column("joined_at", "TIMESTAMP", DataClass.OPERATIONAL, UNTIL_ANONYMISED),
        Column("left_at", "TIMESTAMP", DataClass.OPERATIONAL, UNTIL_ANONYMISED, nullable=True),
    ),
}
