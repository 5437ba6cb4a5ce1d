"""Payload checks: names, room ids, descriptions and candidates."""

from __future__ import annotations

import pytest

from signaling.errors import BadRequest
from signaling.ratelimit import TokenBucket
from signaling.validation import (
    SDP_MAX_BYTES,
    JoinRequest,
    Report,
    clean_name,
    parse_candidate,
    parse_description,
    parse_join,
    parse_report,
)

ROOM = "abcdefghijklmnopqrstuv"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("Anna", "Anna"),
        ("  Anna   de  Vries ", "Anna de Vries"),
        ("An\x00na\x07", "Anna"),
        ("Evil\u202eeman", "Evileman"),  # right-to-left override is a format character
        ("Zoë\tvan\ndijk", "Zoë van dijk"),
        ("李小龍", "李小龍"),
        ("x" * 64, "x" * 64),
    ],
)
def test_names_lose_control_characters(raw: str | None, clean: str | None) -> None:
    assert clean_name(raw) == clean


@pytest.mark.parametrize("raw", ["x" * 65, 42, ["Anna"], "a" * 1000])
def test_bad_names_are_refused_with_a_reason(raw: object) -> None:
    with pytest.raises(BadRequest, match="name"):
        clean_name(raw)


def test_join_reads_only_room_and_typed_values() -> None:
    request = parse_join({"room": ROOM, "name": "Anna", "phone": "06-1234 5678", "userAgent": "x", "sdp": "v=0"})
    assert request == JoinRequest(room=ROOM, name="Anna", phone="06-1234 5678", email=None)
    assert not hasattr(request, "userAgent") and not hasattr(request, "sdp")


@pytest.mark.parametrize("phone", ["(020) 123 4567", "+31 (0)20 123 4567", "06-1234 5678", "0612345678"])
def test_phone_numbers_as_people_write_them_are_accepted(phone: str) -> None:
    assert parse_join({"room": ROOM, "phone": phone}).phone == phone


@pytest.mark.parametrize("raw", ["", None])
def test_empty_phone_and_email_mean_none_typed(raw: object) -> None:
    assert parse_join({"room": ROOM, "phone": raw, "email": raw}) == JoinRequest(ROOM, None, None, None)


@pytest.mark.parametrize(
    ("field", "raw"),
    [("phone", "call me"), ("phone", "+31 6 1234 5678 ext. 9"), ("phone", 612345678), ("phone", "1" * 40),
     ("email", "anna"), ("email", "a@b@c"), ("email", "anna @example.nl"), ("email", "a" * 250 + "@x.nl"),
     ("email", "anna\u200b@example.nl"), ("email", ["a@b"])],
)
def test_bad_phone_numbers_and_addresses_are_refused(field: str, raw: object) -> None:
    with pytest.raises(BadRequest, match=r"phone number|e-mail address"):
        parse_join({"room": ROOM, field: raw})


@pytest.mark.parametrize(
    ("payload", "expected"),
    [({"route": "direct", "setupMs": 812}, Report("direct", 812)),
     ({"route": "relay", "setupMs": 0}, Report("relay", 0))],
)
def test_a_report_carries_route_and_setup_time_only(payload: dict[str, object], expected: Report) -> None:
    assert parse_report({**payload, "ip": "192.0.2.1"}) == expected


@pytest.mark.parametrize(
    "payload",
    [{"route": "p2p", "setupMs": 5}, {"route": "direct"}, {"route": "direct", "setupMs": -1},
     {"route": "direct", "setupMs": 600_001}, {"route": "direct", "setupMs": 1.5}, {"route": "direct", "setupMs": True},
     "direct"],
)
def test_bad_reports_are_refused(payload: object) -> None:
    with pytest.raises(BadRequest):
        parse_report(payload)


@pytest.mark.parametrize("room", ["short", ROOM + "!", "../" + ROOM, None, 5, "a" * 65])
def test_bad_room_ids(room: object) -> None:
    with pytest.raises(BadRequest, match="call link"):
        parse_join({"room": room})


def test_sdp_cap_is_64_kib() -> None:
    assert parse_description({"to": "peer-0001", "sdp": "a" * SDP_MAX_BYTES}).sdp
    with pytest.raises(BadRequest, match="65536"):
        parse_description({"to": "peer-0001", "sdp": "a" * (SDP_MAX_BYTES + 1)})
    with pytest.raises(BadRequest, match="65536"):  # counted in bytes, not characters
        parse_description({"to": "peer-0001", "sdp": "é" * (SDP_MAX_BYTES // 2 + 1)})


def test_candidates_are_copied_field_by_field() -> None:
    message = parse_candidate({"to": "peer-0001", "candidate": {
        "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0", "sdpMLineIndex": 0,
        "usernameFragment": None, "extra": "x"}})
    assert message.candidate == {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0",
                                 "sdpMLineIndex": 0, "usernameFragment": None}
    assert parse_candidate({"to": "peer-0001", "candidate": None}).candidate is None


@pytest.mark.parametrize("candidate", [
    "text", {"candidate": 5}, {"candidate": "c" * 2000}, {"candidate": "c", "sdpMLineIndex": True},
    {"candidate": "c", "sdpMLineIndex": -1}, {"candidate": "c", "sdpMid": "m" * 100},
])
def test_bad_candidates(candidate: object) -> None:
    with pytest.raises(BadRequest):
        parse_candidate({"to": "peer-0001", "candidate": candidate})


def test_token_bucket_allows_bursts_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert [bucket.allow(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.allow(0.1) and not bucket.allow(0.1)
    assert not bucket.allow(0.05)  # the clock going back gives nothing
    assert [bucket.allow(10.0) for _ in range(6)] == [True] * 5 + [False]
