"""Checks for every client payload. Each parser returns a clean value or raises BadRequest; nothing else.

Only the fields named here are ever read, so extra fields a client sends are dropped, never stored or
forwarded.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from signaling.errors import BadRequest

ROOM_ID_RE = re.compile(r"[A-Za-z0-9_-]{22,64}")
PEER_ID_RE = re.compile(r"[A-Za-z0-9_-]{8,64}")
NAME_MAX = 64
SDP_MAX_BYTES = 64 * 1024
CANDIDATE_MAX = 1024
MID_MAX = 64
UFRAG_MAX = 256


def valid_room_id(value: object) -> bool:
    return isinstance(value, str) and ROOM_ID_RE.fullmatch(value) is not None


def clean_name(value: object) -> str | None:
    """A typed display name without control or format characters; None when nothing is left."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest("The name must be text.")
    if len(value) > NAME_MAX * 4:
        raise BadRequest(f"A name can have at most {NAME_MAX} characters.")
    kept = "".join(" " if ch.isspace() else ch for ch in value if unicodedata.category(ch)[0] != "C" or ch.isspace())
    name = " ".join(kept.split())
    if len(name) > NAME_MAX:
        raise BadRequest(f"A name can have at most {NAME_MAX} characters.")
    return name or None


def _mapping(payload: object) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise BadRequest("The message must be an object.")
    return payload


PHONE_RE = re.compile(r"\+?\(?[0-9][0-9 ()./-]{3,30}")  # also "(020) 123 4567"
EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s]{1,190}")
EMAIL_MAX = 254
ROUTES = ("direct", "relay")
SETUP_MS_MAX = 600_000


def clean_phone(value: object) -> str | None:
    """A typed phone number (digits, +, spaces and - ( ) . /); None when none was typed."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or PHONE_RE.fullmatch(value.strip()) is None:
        raise BadRequest("That is not a phone number.")
    return value.strip()


def clean_email(value: object) -> str | None:
    """A typed e-mail address (one @, no spaces); None when none was typed."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > EMAIL_MAX or EMAIL_RE.fullmatch(value.strip()) is None:
        raise BadRequest("That is not an e-mail address.")
    if any(unicodedata.category(ch)[0] == "C" for ch in value):
        raise BadRequest("That is not an e-mail address.")
    return value.strip()


TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")


@dataclass(frozen=True)
class JoinRequest:
    room: str
    name: str | None
    phone: str | None = None
    email: str | None = None
    rejoin: str | None = None
    """The token of an earlier join, to take back a seat held after a disconnect."""


def parse_join(payload: object) -> JoinRequest:
    data = _mapping(payload)
    room = data.get("room")
    if not valid_room_id(room):
        raise BadRequest("That is not a valid call link.")
    return JoinRequest(
        room=room,  # type: ignore[arg-type]
        name=clean_name(data.get("name")),
        phone=clean_phone(data.get("phone")),
        email=clean_email(data.get("email")),
        rejoin=_rejoin_token(data.get("rejoin")),
    )


def _rejoin_token(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or TOKEN_RE.fullmatch(value) is None:
        raise BadRequest("That rejoin token is malformed.")
    return value


@dataclass(frozen=True)
class Report:
    """Telemetry a browser sends once media flows: no personal data, only how the call was set up."""

    route: str
    setup_ms: int


def parse_report(payload: object) -> Report:
    data = _mapping(payload)
    route, setup_ms = data.get("route"), data.get("setupMs")
    if route not in ROUTES:
        raise BadRequest("route is direct or relay.")
    if type(setup_ms) is not int or not 0 <= setup_ms <= SETUP_MS_MAX:
        raise BadRequest("setupMs is a whole number of milliseconds up to 600000.")
    return Report(route=route, setup_ms=setup_ms)


def parse_target(data: dict[str, Any]) -> str:
    target = data.get("to")
    if not isinstance(target, str) or PEER_ID_RE.fullmatch(target) is None:
        raise BadRequest("The message has no valid recipient.")
    return target


@dataclass(frozen=True)
class DescriptionMessage:
    to: str
    sdp: str


def parse_description(payload: object) -> DescriptionMessage:
    data = _mapping(payload)
    to = parse_target(data)
    sdp = data.get("sdp")
    if not isinstance(sdp, str) or not sdp:
        raise BadRequest("The session description is missing.")
    if len(sdp.encode("utf-8", "surrogatepass")) > SDP_MAX_BYTES:
        raise BadRequest(f"The session description is larger than {SDP_MAX_BYTES} bytes.")
    return DescriptionMessage(to=to, sdp=sdp)


@dataclass(frozen=True)
class CandidateMessage:
    to: str
    candidate: dict[str, Any] | None
    """A copy holding only the four RTCIceCandidateInit fields, or None for end-of-candidates."""


def _optional_str(data: dict[str, Any], key: str, limit: int) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise BadRequest(f"The candidate field {key} is invalid.")
    return value


def parse_candidate(payload: object) -> CandidateMessage:
    data = _mapping(payload)
    to = parse_target(data)
    raw = data.get("candidate")
    if raw is None:
        return CandidateMessage(to=to, candidate=None)
    if not isinstance(raw, dict):
        raise BadRequest("The candidate must be an object or null.")
    text = raw.get("candidate")
    if not isinstance(text, str) or len(text) > CANDIDATE_MAX:
        raise BadRequest("The candidate text is invalid.")
    index = raw.get("sdpMLineIndex")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 1024):
        raise BadRequest("The candidate field sdpMLineIndex is invalid.")
    return CandidateMessage(
        to=to,
        candidate={
            "candidate": text,
            "sdpMid": _optional_str(raw, "sdpMid", MID_MAX),
            "sdpMLineIndex": index,
            "usernameFragment": _optional_str(raw, "usernameFragment", UFRAG_MAX),
        },
    )


_CANDIDATE_TYPE = re.compile(r"\styp\s+(\S+)")


def is_relay_candidate(candidate: str) -> bool:
    """True for an ICE candidate line of type relay (RFC 8839 `typ relay`)."""
    found = _CANDIDATE_TYPE.search(candidate)
    return found is not None and found.group(1) == "relay"


def relay_only_sdp(sdp: str) -> str:
    """The SDP without candidate lines other than relay ones: in a relay-only room nobody may learn
    another participant's own address, even from a client that ignores the relay policy."""
    lines = sdp.split("\r\n") if "\r\n" in sdp else sdp.split("\n")
    kept = [line for line in lines if not line.startswith("a=candidate:") or is_relay_candidate(line)]
    return ("\r\n" if "\r\n" in sdp else "\n").join(kept)
