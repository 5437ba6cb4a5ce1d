"""Refusals a client can get, one tree, each carrying the code the client sees (docs/signaling-protocol.md)."""

from __future__ import annotations


class SignalingError(Exception):
    """A request was refused. Turned into an ack / `signal-error` payload in exactly one place (sio.py)."""

    code = "bad-request"
    message = "The request was malformed."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message


class BadRequest(SignalingError):
    code = "bad-request"


class RoomFull(SignalingError):
    code = "room-full"
    message = "This call already has the most people it can hold."


class RoomExpired(SignalingError):
    code = "room-expired"
    message = "This call link has expired or does not exist."


class NotJoined(SignalingError):
    code = "not-joined"
    message = "Join a call first."


class AlreadyJoined(SignalingError):
    code = "already-joined"
    message = "This connection is already in a call."


class UnknownPeer(SignalingError):
    code = "unknown-peer"
    message = "That participant is not in your call."


class RateLimited(SignalingError):
    code = "rate-limited"
    message = "Too many messages; slow down."


class UnknownEvent(SignalingError):
    code = "unknown-event"
    message = "Unknown event."
