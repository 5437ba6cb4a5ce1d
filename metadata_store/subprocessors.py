"""The sub-processor list as data (agreement art. 4.1 and 4.4), served at `/privacy/subprocessors`.

kijkmee runs on the processor's own servers, so the default list is empty: no other processor
handles personal data. An entry is accepted only when it is located in a member state of the
European Union. Article 4.3 forbids any transfer outside the EU without the controller's written
instruction; such an instruction would be one controller's, not the whole service's, so this
module does not model it and refuses every non-EU entry outright (the EEA countries Iceland,
Liechtenstein and Norway included: the agreement says "buiten de Europese Unie", not the EEA).

Pure: no clock, no I/O. Renderers return JSON-ready dicts and escaped HTML fragments.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from metadata_store.schema import DataClass

EU_MEMBER_STATES = frozenset({
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT",
    "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
})
"""ISO 3166-1 alpha-2 codes of the 27 EU member states (Greece as GR, not the EU's own EL)."""

NO_TRANSFER_STATEMENT = (
    "Geen doorgifte buiten de Europese Unie (no transfer outside the European Union): all processing, "
    "sub-processors included, takes place in EU member states."
)
NO_SUBPROCESSORS_STATEMENT = (
    "Geen subverwerkers (no sub-processors): kijkmee runs on the processor's own servers in the EU "
    "and no other processor handles personal data."
)

_TEXT_LIMIT = 500


class SubprocessorRefused(ValueError):
    """A sub-processor entry is malformed or located outside the EU; the message says which and why."""


@dataclass(frozen=True)
class SubProcessor:
    """One other processor engaged for the processing (agreement art. 4.1)."""

    name: str
    """Legal name of the sub-processor."""
    purpose: str
    """What it does for kijkmee, in words a controller understands (e.g. "server hosting")."""
    country: str
    """Where the data is processed: ISO 3166-1 alpha-2 code, upper case (e.g. "NL")."""
    data_classes: frozenset[DataClass]
    """Which kinds of data it can reach, in the schema's terms."""
    since: dt.date
    """Date it was engaged; controllers are told of changes beforehand (art. 4.1)."""
    location: str = ""
    """Optional city or data centre, for the page (e.g. "Amsterdam")."""

    def __post_init__(self) -> None:
        for field, value in (("name", self.name), ("purpose", self.purpose)):
            if not value.strip():
                raise SubprocessorRefused(f"sub-processor {field} is empty")
        for field, value in (("name", self.name), ("purpose", self.purpose), ("location", self.location)):
            if len(value) > _TEXT_LIMIT:
                raise SubprocessorRefused(f"sub-processor {field} is longer than {_TEXT_LIMIT} characters")
        if not re.fullmatch(r"[A-Z]{2}", self.country):
            raise SubprocessorRefused(
                f"sub-processor {self.name!r}: country must be an ISO 3166-1 alpha-2 code such as NL, "
                f"not {self.country!r}"
            )
        if self.country not in EU_MEMBER_STATES:
            raise SubprocessorRefused(
                f"sub-processor {self.name!r} is located in {self.country}, outside the EU: the agreement "
                "(art. 4.3) allows no transfer of personal data outside the European Union"
            )
        if not self.data_classes:
            raise SubprocessorRefused(f"sub-processor {self.name!r}: name the data classes it can reach")

    @property
    def in_eu(self) -> bool:
        """Always true for an accepted entry; kept so renderers and the register can state it."""
        return self.country in EU_MEMBER_STATES


DEFAULT_SUBPROCESSORS: tuple[SubProcessor, ...] = ()
"""kijkmee on the processor's own EU servers: no sub-processors."""


def subprocessors_from_config(items: Iterable[Mapping[str, Any]]) -> tuple[SubProcessor, ...]:
    """Build the list from config tables (TOML `[[subprocessors]]`); raises only `SubprocessorRefused`.

    Keys: name, purpose, country, data_classes (list of DataClass values such as "ip"), since
    (a date or "YYYY-MM-DD"), location (optional).
    """
    out: list[SubProcessor] = []
    for index, item in enumerate(items):
        where = f"subprocessors[{index}]"
        if not isinstance(item, Mapping):
            raise SubprocessorRefused(f"{where}: each sub-processor is a table of keys")
        unknown = set(item) - {"name", "purpose", "country", "data_classes", "since", "location"}
        if unknown:
            raise SubprocessorRefused(f"{where}: unknown keys {sorted(unknown)}")
        try:
            name, purpose, country = item["name"], item["purpose"], item["country"]
            location = item.get("location", "")
            if not all(isinstance(v, str) for v in (name, purpose, country, location)):
                raise SubprocessorRefused(f"{where}: name, purpose, country and location must be text")
            classes = item["data_classes"]
            if isinstance(classes, str) or not isinstance(classes, list | tuple):
                raise SubprocessorRefused(f"{where}: data_classes must be a list such as [\"ip\"]")
            since = item["since"]
            if isinstance(since, str):
                since = dt.date.fromisoformat(since)
            if not isinstance(since, dt.date) or isinstance(since, dt.datetime):
                raise SubprocessorRefused(f"{where}: since must be a date (YYYY-MM-DD)")
            out.append(SubProcessor(
                name=name, purpose=purpose, country=country,
                data_classes=frozenset(DataClass(c) for c in classes), since=since, location=location,
            ))
        except KeyError as exc:
            raise SubprocessorRefused(f"{where}: missing key {exc.args[0]!r}") from None
        except SubprocessorRefused as exc:
            if str(exc).startswith(where):
                raise
            raise SubprocessorRefused(f"{where}: {exc}") from None
        except (ValueError, TypeError) as exc:
            raise SubprocessorRefused(f"{where}: {exc}") from None
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise SubprocessorRefused("the sub-processor list names the same sub-processor twice")
    return tuple(out)


def subprocessor_json(sub: SubProcessor) -> dict[str, Any]:
    """One entry as the page's JSON and the register show it."""
    return {
        "name": sub.name,
        "purpose": sub.purpose,
        "country": sub.country,
        "location": sub.location,
        "in_eu": sub.in_eu,
        "data_classes": sorted(c.value for c in sub.data_classes),
        "since": sub.since.isoformat(),
    }


def subprocessors_json(subs: Iterable[SubProcessor]) -> dict[str, Any]:
    """The `/privacy/subprocessors` JSON body (see `SUBPROCESSORS_SCHEMA`)."""
    entries = [subprocessor_json(s) for s in sorted(subs, key=lambda s: s.name)]
    return {
        "subprocessors": entries,
        "transfers_outside_eu": False,
        "statement": NO_TRANSFER_STATEMENT if entries else NO_SUBPROCESSORS_STATEMENT + " " + NO_TRANSFER_STATEMENT,
    }


def subprocessors_html(subs: Iterable[SubProcessor]) -> str:
    """An HTML fragment (no page chrome) for `/privacy/subprocessors`; every value is escaped."""
    body = subprocessors_json(subs)
    parts = ['<section class="subprocessors" lang="nl">', "<h1>Subverwerkers (sub-processors)</h1>"]
    if body["subprocessors"]:
        parts.append(
            "<table><thead><tr><th>Naam (name)</th><th>Doel (purpose)</th><th>Land (country)</th>"
            "<th>Gegevens (data)</th><th>Sinds (since)</th></tr></thead><tbody>"
        )
        for entry in body["subprocessors"]:
            country = entry["country"] + (f", {entry['location']}" if entry["location"] else "")
            cells = (entry["name"], entry["purpose"], country, ", ".join(entry["data_classes"]), entry["since"])
            parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        parts.append("</tbody></table>")
    parts.append(f"<p>{html.escape(body['statement'])}</p>")
    parts.append("</section>")
    return "\n".join(parts)


SUBPROCESSORS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://kijkmee.invalid/schemas/subprocessors-1.json",
    "title": "kijkmee sub-processor list",
    "type": "object",
    "additionalProperties": False,
    "required": ["subprocessors", "transfers_outside_eu", "statement"],
    "properties": {
        "subprocessors": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "purpose", "country", "location", "in_eu", "data_classes", "since"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "purpose": {"type": "string", "minLength": 1},
                    "country": {"enum": sorted(EU_MEMBER_STATES)},
                    "location": {"type": "string"},
                    "in_eu": {"const": True},
                    "data_classes": {
                        "type": "array", "minItems": 1, "uniqueItems": True,
                        "items": {"enum": [c.value for c in DataClass]},
                    },
                    "since": {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
                },
            },
        },
        "transfers_outside_eu": {"const": False},
        "statement": {"type": "string", "minLength": 1},
    },
}
"""Published JSON Schema (draft 2020-12) of `subprocessors_json`."""
