"""Breach register: required fields block notification, the 48-hour deadline, overdue flags, documents."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metadata_store.breaches import (
    BREACH_NOTIFICATION_SCHEMA,
    AffectedController,
    Breach,
    BreachClosed,
    BreachError,
    BreachIncomplete,
    BreachInvalid,
    BreachNature,
    BreachStatus,
    Estimate,
    SubjectCategory,
    UnknownController,
    breach_from_json,
    breach_metrics,
    breach_to_json,
    close,
    deadline,
    hours_left,
    mark_notified,
    missing_fields,
    notification_document,
    notified_late,
    overdue,
    parse_estimate,
)
from metadata_store.register import ContactPoint, ControllerInfo, ProcessorInfo
from metadata_store.schema import DataClass

T0 = dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
TICK = dt.timedelta(microseconds=1)
DPO = ContactPoint("Functionaris gegevensbescherming", "DPO", "fg@verwerker.example", "+31 50 000 0000")
PROCESSOR = ProcessorInfo(
    "123meekijken (WeSeeDo B.V.)", "Stavangerweg 23-1, 9723 JC Groningen", "68009461",
    ContactPoint("Privacy desk", email="privacy@verwerker.example"), dpo=DPO,
)


def draft(**changes: Any) -> Breach:
    """A breach with nothing but the facts known at discovery."""
    return Breach(id="2026-001", discovered_at=T0,
                  affected=(AffectedController("acme"), AffectedController("bakker-bv")), **changes)


def complete(**changes: Any) -> Breach:
    fields: dict[str, Any] = {
        "id": "2026-001",
        "discovered_at": T0,
        "affected": (AffectedController("acme", Estimate(40, 60), Estimate(120, 200)),
                     AffectedController("bakker-bv", Estimate(3, 3), Estimate(7, 7))),
        "occurred_from": T0 - 30 * H,
        "occurred_until": T0 - 2 * H,
        "nature": frozenset({BreachNature.CONFIDENTIALITY}),
        "summary": "A database backup copy was readable from a misconfigured storage bucket.",
        "cause": "Access rule left open after maintenance.",
        "subject_categories": frozenset({SubjectCategory.CONTROLLER_CUSTOMERS, SubjectCategory.CONTROLLER_STAFF}),
        "data_classes": frozenset({DataClass.IP, DataClass.TYPED_NAME}),
        "contact": DPO,
        "likely_consequences": "Names and IP addresses of call participants may have been seen by others.",
        "measures_taken": "Bucket closed; access logs reviewed; copy deleted.",
        "measures_proposed": "Automated check of storage access rules after every change.",
    }
    fields.update(changes)
    return Breach(**fields)


def validate_json(doc: Any, schema: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(doc)


# --- deadline ---------------------------------------------------------------------------------

def test_the_deadline_is_exactly_48_hours_after_discovery() -> None:
    b = draft()
    assert deadline(b) == T0 + 48 * H
    assert hours_left(b, T0) == 48.0
    assert hours_left(b, T0 + 47.5 * H) == 0.5
    assert hours_left(b, T0 + 50 * H) == -2.0


def test_times_in_other_zones_are_kept_in_utc() -> None:
    amsterdam = dt.timezone(dt.timedelta(hours=1))
    b = Breach(id="x", discovered_at=dt.datetime(2026, 11, 2, 10, 30, tzinfo=amsterdam))
    assert b.discovered_at == T0 and b.discovered_at.tzinfo == dt.UTC
    assert deadline(b) == T0 + 48 * H


# --- required fields --------------------------------------------------------------------------

REQUIRED: list[tuple[str, dict[str, Any], str]] = [
    ("nature", {"nature": frozenset()}, "nature"),
    ("summary", {"summary": "  \n"}, "summary"),
    ("subject_categories", {"subject_categories": frozenset()}, "subject_categories"),
    ("data_classes", {"data_classes": frozenset()}, "data_classes"),
    ("contact", {"contact": None}, "contact"),
    ("likely_consequences", {"likely_consequences": ""}, "likely_consequences"),
    ("measures", {"measures_taken": "", "measures_proposed": " "}, "measures_taken or measures_proposed"),
    ("data_subjects", {"affected": (AffectedController("acme", None, Estimate(1, 1)),
                                    AffectedController("bakker-bv", Estimate(1, 1), Estimate(1, 1)))},
     "affected[acme].data_subjects"),
    ("records", {"affected": (AffectedController("acme", Estimate(1, 1), None),
                              AffectedController("bakker-bv", Estimate(1, 1), Estimate(1, 1)))},
     "affected[acme].records"),
]


def test_a_complete_breach_misses_nothing() -> None:
    assert missing_fields(complete()) == []


@pytest.mark.parametrize(("change", "missing"), [(c, m) for _, c, m in REQUIRED], ids=[r[0] for r in REQUIRED])
def test_each_missing_required_field_blocks_notification(change: dict[str, Any], missing: str) -> None:
    b = complete(**change)
    assert missing_fields(b) == [missing]
    with pytest.raises(BreachIncomplete) as caught:
        mark_notified(b, "acme", T0 + H)
    assert caught.value.missing == [missing]
    assert str(caught.value) == f"breach 2026-001 cannot be notified: missing {missing}"
    with pytest.raises(BreachIncomplete):
        notification_document(b, "acme", PROCESSOR)


def test_a_draft_lists_every_missing_field_in_order() -> None:
    assert missing_fields(draft()) == [
        "nature", "summary", "subject_categories", "data_classes", "contact", "likely_consequences",
        "measures_taken or measures_proposed", "affected[acme].data_subjects", "affected[acme].records",
        "affected[bakker-bv].data_subjects", "affected[bakker-bv].records",
    ]
    assert "affected" in missing_fields(Breach(id="x", discovered_at=T0))


def test_one_controllers_missing_counts_do_not_block_another() -> None:
    b = complete(affected=(AffectedController("acme", Estimate(1, 2), Estimate(3, 4)),
                           AffectedController("bakker-bv")))
    told = mark_notified(b, "acme", T0 + H)
    assert told.affected[0].notified_at == T0 + H
    with pytest.raises(BreachIncomplete, match=r"affected\[bakker-bv\]\.data_subjects"):
        mark_notified(told, "bakker-bv", T0 + H)


@pytest.mark.parametrize("which", ["measures_taken", "measures_proposed"])
def test_measures_taken_or_proposed_is_enough(which: str) -> None:
    other = "measures_proposed" if which == "measures_taken" else "measures_taken"
    assert missing_fields(complete(**{other: ""})) == []


# --- notification and status ------------------------------------------------------------------

def test_marking_notified_records_the_time_per_controller_and_is_idempotent() -> None:
    b = complete()
    assert b.status is BreachStatus.OPEN
    one = mark_notified(b, "acme", T0 + 3 * H)
    assert [a.notified_at for a in one.affected] == [T0 + 3 * H, None]
    assert one.status is BreachStatus.OPEN and b.affected[0].notified_at is None
    assert mark_notified(one, "acme", T0 + 5 * H) is one
    both = mark_notified(one, "bakker-bv", T0 + 4 * H)
    assert both.status is BreachStatus.NOTIFIED
    with pytest.raises(UnknownController, match="'other' is not affected by breach 2026-001"):
        mark_notified(both, "other", T0)


def test_overdue_flags_start_just_after_the_deadline() -> None:
    b = complete()
    limit = T0 + 48 * H
    assert overdue([b], limit - TICK) == []
    assert overdue([b], limit) == []  # "uiterlijk binnen 48 uur": at the deadline itself is still in time
    assert overdue([b], limit + TICK) == [b]
    half = mark_notified(b, "acme", limit - H)
    assert overdue([half], limit + TICK) == [half]
    done = mark_notified(half, "bakker-bv", limit)
    assert overdue([done], limit + 100 * H) == [] and notified_late(done) == []
    late = mark_notified(half, "bakker-bv", limit + TICK)
    assert overdue([late], limit + 100 * H) == [] and notified_late(late) == ["bakker-bv"]
    assert overdue([Breach(id="nobody", discovered_at=T0)], limit + TICK) != []


def test_metrics_count_open_overdue_notified_and_closed() -> None:
    fresh = complete()
    old = dataclasses.replace(complete(), id="2026-000", discovered_at=T0 - 72 * H, occurred_from=None,
                              occurred_until=None)
    done = mark_notified(mark_notified(complete(id="2026-002"), "acme", T0 + H), "bakker-bv", T0 + H)
    shut = close(done, T0 + 10 * H)
    now = T0 + 2 * H
    assert breach_metrics([fresh, old, done, shut], now) == {"open": 2, "overdue": 1, "notified": 1, "closed": 1}
    assert breach_metrics([], now) == {"open": 0, "overdue": 0, "notified": 0, "closed": 0}


def test_closing_needs_notification_or_a_timely_reason() -> None:
    b = complete()
    with pytest.raises(BreachError, match="needs a note"):
        close(b, T0 + H)
    with pytest.raises(BreachError, match="notify acme, bakker-bv before closing"):
        close(b, T0 + 49 * H, note="no risk")
    ruled_out = close(b, T0 + H, note="The copy was encrypted and the key was never exposed.")
    assert ruled_out.status is BreachStatus.CLOSED and overdue([ruled_out], T0 + 100 * H) == []
    with pytest.raises(BreachClosed):
        mark_notified(ruled_out, "acme", T0 + 2 * H)
    with pytest.raises(BreachClosed):
        close(ruled_out, T0 + 2 * H)
    told = mark_notified(mark_notified(b, "acme", T0 + H), "bakker-bv", T0 + 50 * H)
    assert close(told, T0 + 60 * H).closed_at == T0 + 60 * H


# --- documents --------------------------------------------------------------------------------

def test_notification_documents_for_two_controllers() -> None:
    b = complete()
    acme = ControllerInfo("acme", "Acme Zorg B.V.")
    md_a, doc_a = notification_document(b, "acme", PROCESSOR, acme)
    md_b, doc_b = notification_document(b, "bakker-bv", PROCESSOR)
    for doc in (doc_a, doc_b):
        validate_json(json.loads(json.dumps(doc)), BREACH_NOTIFICATION_SCHEMA)
    assert doc_a["data_subjects"]["approximate_number"] == {"low": 40, "high": 60}
    assert doc_b["personal_data"]["approximate_records"] == {"low": 7, "high": 7}
    assert doc_a["deadline"] == "2026-11-04T09:30:00Z" and doc_a["discovered_at"] == "2026-11-02T09:30:00Z"
    for md, who, subjects, records in ((md_a, "Acme Zorg B.V.", "40-60", "120-200"), (md_b, "bakker-bv", "3", "7")):
        for text in (b.summary, b.cause, b.likely_consequences, b.measures_taken, b.measures_proposed,
                     DPO.name, DPO.email, DPO.phone, PROCESSOR.name, PROCESSOR.registration, who,
                     "2026-11-02T09:30:00Z", "2026-11-04T09:30:00Z", "2026-11-01T03:30:00Z", "2026-11-02T07:30:00Z",
                     "vertrouwelijkheid (confidentiality)", "klanten van klanten (controller-customers)",
                     "medewerkers van klanten (controller-staff)", "IP address (ip)", "(typed-name)",
                     "Melding datalek", "Waarschijnlijke gevolgen (likely consequences)"):
            assert text in md, text
        assert f"(approximate number): {subjects}\n" in md and f"(approximate number of records): {records}\n" in md
    # One controller is never told about another.
    assert "bakker" not in md_a and "bakker" not in json.dumps(doc_a)
    assert "acme" not in md_b.lower() and "acme" not in json.dumps(doc_b)


def test_unknown_times_and_empty_optional_text_read_as_such() -> None:
    md, doc = notification_document(complete(occurred_from=None, occurred_until=None, cause="",
                                             measures_proposed=""), "acme", PROCESSOR)
    validate_json(doc, BREACH_NOTIFICATION_SCHEMA)
    assert "Begin van de inbreuk (breach began): onbekend (unknown)" in md
    assert "Oorzaak (cause): geen (none)" in md


def test_documents_refuse_a_stranger_or_mismatched_details() -> None:
    with pytest.raises(UnknownController):
        notification_document(complete(), "other", PROCESSOR)
    with pytest.raises(UnknownController):
        notification_document(complete(), "acme", PROCESSOR, ControllerInfo("bakker-bv", "Bakker"))


def test_the_schema_rejects_a_notification_missing_a_required_field() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    _, doc = notification_document(complete(), "acme", PROCESSOR)
    validator = jsonschema.Draft202012Validator(BREACH_NOTIFICATION_SCHEMA)
    for key, bad in (("likely_consequences", " "), ("nature", []), ("deadline", "2026-11-04 09:30")):
        assert not validator.is_valid({**doc, key: bad}), key
    assert not validator.is_valid({**doc, "measures_taken": "", "measures_proposed": ""})
    assert not validator.is_valid({k: v for k, v in doc.items() if k != "contact_point"})


# --- the model holds nothing about a data subject ------------------------------------------

def test_the_model_holds_no_field_about_an_individual_data_subject() -> None:
    """Pinned: a new field needs review that it cannot hold a subject's IP, name, phone or e-mail."""
    assert [f.name for f in dataclasses.fields(Breach)] == [
        "id", "discovered_at", "affected", "occurred_from", "occurred_until", "nature", "summary", "cause",
        "subject_categories", "data_classes", "contact", "likely_consequences", "measures_taken",
        "measures_proposed", "closed_at", "closure_note",
    ]
    assert [f.name for f in dataclasses.fields(AffectedController)] == [
        "controller_id", "data_subjects", "records", "notified_at"]
    assert [f.name for f in dataclasses.fields(Estimate)] == ["low", "high"]
    # Subjects appear only as categories and counts; the one person named is the processor's contact.
    assert not [f.name for f in dataclasses.fields(Breach) if re.search(r"ip|phone|email|name|address", f.name)]


# --- malformed records ------------------------------------------------------------------------

@pytest.mark.parametrize(("make", "message"), [
    (lambda: Breach(id="", discovered_at=T0), "breach id"),
    (lambda: Breach(id="a/b", discovered_at=T0), "breach id"),
    (lambda: Breach(id="x", discovered_at=dt.datetime(2026, 11, 2)), "timezone-aware"),
    (lambda: draft(occurred_from=T0, occurred_until=T0 - H), "occurred_from is after"),
    (lambda: Breach(id="x", discovered_at=T0, affected=(AffectedController("a"), AffectedController("a"))),
     "listed twice"),
    (lambda: Breach(id="x", discovered_at=T0, affected=(AffectedController("a", notified_at=T0 - H),)),
     "notified before the breach was discovered"),
    (lambda: Breach(id="x", discovered_at=T0, affected=(AffectedController("a b"),)), "controller id"),
    (lambda: Breach(id="x", discovered_at=T0, closed_at=T0 - H), "closed_at is before"),
    (lambda: Breach(id="x", discovered_at=T0, summary="x" * 20_001), "summary must be text"),
    (lambda: Estimate(5, 4), "0 <= low <= high"),
    (lambda: Estimate(-1, 4), "0 <= low <= high"),
])
def test_malformed_records_are_refused(make: Any, message: str) -> None:
    with pytest.raises(BreachInvalid, match=message):
        make()


def test_estimates_parse_from_what_ops_type() -> None:
    assert parse_estimate("12") == Estimate(12, 12)
    assert parse_estimate(" 10 - 20 ") == Estimate(10, 20)
    assert str(parse_estimate("10\u201320")) == "10-20"
    for bad in ("", "ten", "20-10", "-3", "1-2-3"):
        with pytest.raises(BreachInvalid):
            parse_estimate(bad)


# --- persistence round trip -------------------------------------------------------------------

def test_a_record_round_trips_through_json() -> None:
    b = mark_notified(complete(), "acme", T0 + H)
    stored = json.loads(json.dumps(breach_to_json(b)))
    assert breach_from_json(stored) == b
    shut = close(b, T0 + 2 * H, note="ruled out")
    assert breach_from_json(breach_to_json(shut)) == shut
    assert breach_from_json(breach_to_json(draft())) == draft()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@given(key=st.sampled_from(sorted(breach_to_json(complete()))), value=json_values)
def test_a_damaged_record_raises_only_breach_invalid(key: str, value: Any) -> None:
    record = breach_to_json(complete())
    record[key] = value
    try:
        breach_from_json(record)
    except BreachInvalid:
        pass


@given(value=json_values)
def test_a_damaged_controller_entry_raises_only_breach_invalid(value: Any) -> None:
    record = breach_to_json(complete())
    record["affected"] = [value]
    try:
        breach_from_json(record)
    except BreachInvalid:
        pass


def test_category_fields_take_only_their_enum() -> None:
    assert complete(nature={BreachNature.INTEGRITY}).nature == frozenset({BreachNature.INTEGRITY})
    with pytest.raises(BreachInvalid, match="data_classes must hold DataClass values"):
        complete(data_classes=frozenset({"ip"}))
    with pytest.raises(BreachInvalid, match="nature must hold BreachNature values"):
        complete(nature="confidentiality")


def test_operator_input_leaves_fields_out_and_cannot_set_notification_or_closing_times() -> None:
    from metadata_store.breaches import breach_from_input

    fresh = breach_from_input({"id": "2026-009", "discovered_at": T0.isoformat(), "summary": "laptop lost",
                               "affected": [{"controller_id": "acme", "notified_at": T0.isoformat()}],
                               "closed_at": T0.isoformat()})
    assert (fresh.summary, fresh.closed_at, fresh.affected) == ("laptop lost", None, (AffectedController("acme"),))
    assert fresh.status is BreachStatus.OPEN and missing_fields(fresh)
    told = mark_notified(complete(), "acme", T0 + dt.timedelta(hours=1))
    changed = breach_from_input({
        "summary": "a laptop was stolen", "id": "other", "discovered_at": "2020-01-01T00:00:00+00:00",
        "affected": [{"controller_id": "acme", "notified_at": None}],
    }, told)
    assert (changed.id, changed.discovered_at, changed.summary) == (told.id, dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
                                                                   "a laptop was stolen")
    assert changed.affected[0].notified_at == told.affected[0].notified_at  # kept, not cleared by the input
    with pytest.raises(BreachInvalid):
        breach_from_input({"id": "2026-010", "discovered_at": T0.isoformat(), "affected": "acme"})
