"""Register of processing (art. 30(2)) from the real schema, and the sub-processor list."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest

from metadata_store.register import (
    DATA_CLASS_LABELS,
    REFERENCES,
    REGISTER_SCHEMA,
    TABLE_CATEGORIES,
    ContactPoint,
    ControllerInfo,
    ProcessorInfo,
    RegisterError,
    RegisterSettings,
    build_register,
    register_markdown,
    validate_register,
)
from metadata_store.schema import TABLES, Column, DataClass
from metadata_store.subprocessors import (
    DEFAULT_SUBPROCESSORS,
    SUBPROCESSORS_SCHEMA,
    SubProcessor,
    SubprocessorRefused,
    subprocessors_from_config,
    subprocessors_html,
    subprocessors_json,
)

CONTRACT = Path(__file__).resolve().parents[3] / "shared" / "contract" / "verwerkersovereenkomst.txt"
PROCESSOR = ProcessorInfo(
    "123meekijken (WeSeeDo B.V.)", "Stavangerweg 23-1, 9723 JC Groningen", "68009461",
    ContactPoint("Privacy desk", email="privacy@verwerker.example"),
    dpo=ContactPoint("Functionaris gegevensbescherming", "DPO", "fg@verwerker.example"),
)
CONTROLLERS = [
    ControllerInfo("acme", "Acme Zorg B.V.", "Markt 1, Utrecht", ContactPoint("Security", email="sec@acme.example")),
    ControllerInfo("bakker-bv", "Bakker B.V.", dpo=ContactPoint("J. Jansen", "DPO", phone="+31 20 000 0000")),
]
HOSTING = SubProcessor("Datacentrum Noord B.V.", "server hosting (colocation)", "NL",
                       frozenset({DataClass.IP, DataClass.TYPED_NAME}), dt.date(2026, 1, 1), "Groningen")


def register(**settings: Any) -> dict[str, Any]:
    return build_register(processor=PROCESSOR, controllers=CONTROLLERS, settings=RegisterSettings(**settings))


def validate_json(doc: Any, schema: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(doc)


def columns(reg: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["table"], e["column"]): e for cat in reg["categories_of_processing"] for e in cat["columns"]}


# --- generated from the real schema -----------------------------------------------------------

def test_the_register_of_the_real_schema_validates_and_covers_every_column() -> None:
    reg = register()
    assert validate_register(reg, TABLES) == []
    entries = columns(reg)
    assert set(entries) == {(t, c.name) for t, cols in TABLES.items() for c in cols}
    for table, cols in TABLES.items():
        for c in cols:
            assert entries[table, c.name]["data_class"] == c.data_class.value
            assert entries[table, c.name]["retention"] == c.retention
    sessions = next(c for c in reg["categories_of_processing"] if c["id"] == "sessions")
    assert "IP address (sessions.ip, data class ip)" in sessions["summary"]
    assert "name the person typed (sessions.name, data class typed-name)" in sessions["summary"]


def test_the_json_validates_against_the_published_schema() -> None:
    for reg in (register(), register(subprocessors=(HOSTING,), operator_2fa=True)):
        validate_json(json.loads(json.dumps(reg)), REGISTER_SCHEMA)
        assert validate_register(json.loads(json.dumps(reg))) == []


def test_every_controller_with_contacts_and_categories() -> None:
    reg = register()
    assert [c["id"] for c in reg["controllers"]] == ["acme", "bakker-bv"]
    assert reg["controllers"][0]["contact"]["email"] == "sec@acme.example"
    assert reg["controllers"][1]["dpo"]["phone"] == "+31 20 000 0000"
    ids = [c["id"] for c in reg["categories_of_processing"]]
    assert ids == [*TABLES, "signalling-exchange", "media-relay"]
    assert all(c["categories"] == ids for c in reg["controllers"])
    assert reg["processor"]["dpo"]["name"] == "Functionaris gegevensbescherming"
    with pytest.raises(RegisterError, match="twice"):
        build_register(processor=PROCESSOR, controllers=[CONTROLLERS[0], CONTROLLERS[0]], settings=RegisterSettings())


def test_the_markdown_shows_every_column_party_and_measure() -> None:
    reg = register(subprocessors=(HOSTING,))
    md = register_markdown(reg)
    for table, cols in TABLES.items():
        for c in cols:
            row = f"| {table} | {c.name} | {c.data_class.value} | "
            assert row in md, row
            assert re.search(re.escape(row) + r"(yes|no) \| " + re.escape(c.retention) + " ", md), row
    for text in ("Acme Zorg B.V.", "sec@acme.example", "Bakker B.V.", "J. Jansen", PROCESSOR.name,
                 "fg@verwerker.example", "Geen doorgifte buiten de Europese Unie", "Datacentrum Noord B.V.",
                 "Functionaris gegevensbescherming (DPO)", "meerfactorauthenticatie (2FA)"):
        assert text in md, text
    assert md.count("\n| ") >= len(reg["security_measures"]) + sum(len(c) for c in TABLES.values())


# --- validation catches drift -----------------------------------------------------------------

def with_extra_column() -> dict[str, tuple[Column, ...]]:
    tables = dict(TABLES)
    tables["sessions"] = (*TABLES["sessions"], Column("user_agent", "TEXT", DataClass.OPERATIONAL, "90 days"))
    return tables


def test_a_column_added_to_the_schema_fails_a_register_made_before() -> None:
    assert validate_register(register(), with_extra_column()) == [
        "column sessions.user_agent is declared in the schema but missing from the register"]


def test_an_entry_for_an_undeclared_column_fails() -> None:
    stale = build_register(processor=PROCESSOR, controllers=CONTROLLERS, settings=RegisterSettings(),
                           tables=with_extra_column())
    assert validate_register(stale, with_extra_column()) == []
    assert validate_register(stale, TABLES) == [
        "register entry sessions.user_agent (category sessions) refers to no declared column"]


def test_changed_class_retention_duplicates_and_undescribed_tables_are_reported() -> None:
    reg = copy.deepcopy(register())
    sessions = next(c for c in reg["categories_of_processing"] if c["id"] == "sessions")
    ip = next(e for e in sessions["columns"] if e["column"] == "ip")
    ip["data_class"] = "operational"
    ip["retention"] = "forever"
    sessions["columns"].append(dict(sessions["columns"][0]))
    assert validate_register(reg) == [
        "column sessions.ip: register says data class 'operational', schema says 'ip'",
        "column sessions.ip: register says retention 'forever', schema says "
        "'until the session is anonymised (at most 90 days, never more than 3 months)'",
        "column sessions.id appears more than once in the register",
    ]
    tables = {**TABLES, "recordings": (Column("id", "INTEGER", DataClass.OPERATIONAL, "90 days"),)}
    built = build_register(processor=PROCESSOR, controllers=[], settings=RegisterSettings(), tables=tables)
    assert validate_register(built, tables) == [
        "category 'recordings' has no purpose (describe it in TABLE_CATEGORIES)"]


def test_a_malformed_register_gives_problems_not_exceptions() -> None:
    assert validate_register({}) == [
        "register has no list of categories_of_processing",
        *[f"column {t}.{c.name} is declared in the schema but missing from the register"
          for t, cols in TABLES.items() for c in cols],
        "register has no transfers section",
    ]
    junk = {"categories_of_processing": [1, {"columns": [None], "purpose": "x", "id": "c"}], "transfers": []}
    problems = validate_register(junk)
    assert "a category of processing is malformed" in problems
    assert "category 'c' has a malformed column entry" in problems


def test_a_transfer_outside_the_eu_fails_validation() -> None:
    reg = copy.deepcopy(register(subprocessors=(HOSTING,)))
    reg["transfers"]["outside_eu"] = True
    reg["transfers"]["subprocessors"][0]["country"] = "US"
    reg["transfers"]["hosting_country"] = "CH"
    assert validate_register(reg) == [
        "register states a transfer outside the EU (agreement art. 4.3 forbids it)",
        "hosting country 'CH' is not an EU member state",
        "sub-processor 'Datacentrum Noord B.V.' is not located in an EU member state",
    ]


# --- security measures ------------------------------------------------------------------------

def test_measures_follow_the_settings() -> None:
    def in_place(reg: dict[str, Any]) -> dict[str, bool]:
        return {m["id"]: m["in_place"] for m in reg["security_measures"]}

    off, on = in_place(register()), in_place(register(
        encryption_at_rest_per_controller_keys=True, offboarding_deletion=True, audit_log=True, operator_2fa=True,
        operator_password_policy=True, operator_roles=True, login_lockout=True, backups_tested=True,
        datacentre_certifications=("ISO 27001", "NEN 7510"), monitoring_24x7=True))
    assert not off["operator-2fa"] and not off["audit-log"] and not off["backups"]
    assert all(on.values())
    assert in_place(register(retention_days=120))["retention"] is False
    tls = next(m for m in register(tls_minimum="1.3")["security_measures"] if m["id"] == "tls")
    assert tls["description"].startswith("TLS 1.3 minimum")


def test_every_measure_cites_the_agreement_in_its_own_words() -> None:
    reg = register()
    assert all(m["references"] for m in reg["security_measures"])
    cited = {r["id"] for m in reg["security_measures"] for r in m["references"]}
    assert cited == set(REFERENCES)
    if not CONTRACT.exists():
        pytest.skip("the agreement's text is not beside the repository")
    text = " ".join(re.sub("[\u0638\ufffd]", " ", CONTRACT.read_text(encoding="utf-8")).split())
    for clause, quote in REFERENCES.values():
        assert quote in text, (clause, quote)


@pytest.mark.parametrize(("settings", "message"), [
    ({"tls_minimum": "1.1"}, "tls_minimum"),
    ({"retention_days": 0}, "retention_days"),
    ({"max_peer_to_peer": 4}, "max_peer_to_peer"),
    ({"hosting_country": "US"}, "not an EU member state"),
])
def test_settings_that_break_a_promise_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(RegisterError, match=message):
        RegisterSettings(**settings)


def test_parties_are_checked() -> None:
    with pytest.raises(RegisterError, match="e-mail address or a phone number"):
        ContactPoint("Desk")
    with pytest.raises(RegisterError, match="not an e-mail address"):
        ContactPoint("Desk", email="desk")
    with pytest.raises(RegisterError, match="controller id"):
        ControllerInfo("a b", "A")
    with pytest.raises(RegisterError, match="registration"):
        ProcessorInfo("P", "Street 1", " ", ContactPoint("D", phone="1"))


def test_every_data_class_and_table_has_words() -> None:
    assert set(DATA_CLASS_LABELS) == set(DataClass)
    assert set(TABLE_CATEGORIES) == set(TABLES)


# --- sub-processors ---------------------------------------------------------------------------

def test_the_default_is_no_sub_processors_and_says_so() -> None:
    assert DEFAULT_SUBPROCESSORS == ()
    body = subprocessors_json(DEFAULT_SUBPROCESSORS)
    validate_json(body, SUBPROCESSORS_SCHEMA)
    assert body["subprocessors"] == [] and body["transfers_outside_eu"] is False
    assert body["statement"].startswith("Geen subverwerkers (no sub-processors)")
    page = subprocessors_html(DEFAULT_SUBPROCESSORS)
    assert "<table>" not in page and "Geen subverwerkers" in page
    assert "- Subverwerkers (sub-processors): none" in register_markdown(register())


@pytest.mark.parametrize("country", ["US", "CH", "GB", "NO", "IS", "LI"])
def test_a_sub_processor_outside_the_eu_is_refused(country: str) -> None:
    with pytest.raises(SubprocessorRefused, match=f"located in {country}, outside the EU"):
        SubProcessor("Cloud Inc.", "hosting", country, frozenset({DataClass.IP}), dt.date(2026, 1, 1))
    item = {"name": "Cloud Inc.", "purpose": "hosting", "country": country, "data_classes": ["ip"],
            "since": "2026-01-01"}
    with pytest.raises(SubprocessorRefused, match=r"subprocessors\[0\]: .*outside the EU"):
        subprocessors_from_config([item])


def test_sub_processors_load_from_config_and_render_escaped() -> None:
    subs = subprocessors_from_config([{"name": "Host <b>&</b> Co", "purpose": "hosting", "country": "DE",
                                       "data_classes": ["ip", "typed-name"], "since": dt.date(2026, 2, 1),
                                       "location": "Frankfurt"}])
    assert subs[0].in_eu and subs[0].data_classes == frozenset({DataClass.IP, DataClass.TYPED_NAME})
    body = subprocessors_json(subs)
    validate_json(json.loads(json.dumps(body)), SUBPROCESSORS_SCHEMA)
    assert body["subprocessors"][0]["data_classes"] == ["ip", "typed-name"]
    page = subprocessors_html(subs)
    assert "Host &lt;b&gt;&amp;&lt;/b&gt; Co" in page and "<b>" not in page
    assert "<td>DE, Frankfurt</td>" in page and "<td>2026-02-01</td>" in page


@pytest.mark.parametrize(("item", "message"), [
    ({"name": "A", "purpose": "p", "country": "nl", "data_classes": ["ip"], "since": "2026-01-01"}, "alpha-2"),
    ({"name": "A", "purpose": "p", "country": "NL", "data_classes": "ip", "since": "2026-01-01"}, "must be a list"),
    ({"name": "A", "purpose": "p", "country": "NL", "data_classes": ["sdp"], "since": "2026-01-01"}, "sdp"),
    ({"name": "A", "purpose": "p", "country": "NL", "data_classes": [], "since": "2026-01-01"}, "data classes"),
    ({"name": "A", "purpose": "p", "country": "NL", "data_classes": ["ip"], "since": "soon"}, "soon"),
    ({"name": "A", "purpose": "p", "country": "NL", "data_classes": ["ip"]}, "missing key 'since'"),
    ({"name": "", "purpose": "p", "country": "NL", "data_classes": ["ip"], "since": "2026-01-01"}, "name is empty"),
    ({"name": "A", "purpose": "p", "country": "NL", "data_classes": ["ip"], "since": "2026-01-01", "x": 1},
     "unknown keys"),
])
def test_malformed_config_entries_are_refused(item: dict[str, Any], message: str) -> None:
    with pytest.raises(SubprocessorRefused, match=message):
        subprocessors_from_config([item])


def test_the_same_sub_processor_twice_is_refused() -> None:
    item = {"name": "A", "purpose": "p", "country": "NL", "data_classes": ["ip"], "since": "2026-01-01"}
    with pytest.raises(SubprocessorRefused, match="twice"):
        subprocessors_from_config([item, item])
    with pytest.raises(SubprocessorRefused, match="table of keys"):
        subprocessors_from_config(["A"])  # type: ignore[list-item]


def test_sub_processors_appear_in_the_register() -> None:
    reg = register(subprocessors=(HOSTING,))
    assert reg["transfers"]["subprocessors"] == subprocessors_json((HOSTING,))["subprocessors"]
    assert reg["transfers"]["outside_eu"] is False and reg["transfers"]["third_countries"] == []
    assert validate_register(reg) == []
