"""Encoding responses, and the one place a :class:`~turn_relay.errors.RequestError` becomes ERROR-CODE."""

from __future__ import annotations

from typing import NamedTuple

from turn_relay.errors import RequestError, UnknownAttributeError
from turn_relay.stun import (
    Attribute,
    ErrorCodeAttribute,
    Message,
    MessageClass,
    Software,
    UnknownAttributes,
    encode_message,
)


class ReplyTo(NamedTuple):
    """What answering a request needs."""

    method: int
    """The request's method."""
    transaction_id: bytes
    """The request's transaction id."""
    key: bytes | None
    """The long-term key the request was authenticated with: the response then carries
    MESSAGE-INTEGRITY. None before authentication (Binding, 400, 401, 438)."""
    fingerprint: bool
    """The request carried FINGERPRINT, so the response does too."""


def _encode(reply_to: ReplyTo, message_class: MessageClass, attributes: list[Attribute], software: str | None) -> bytes:
    if software is not None:
        attributes.append(Software(software))
    message = Message(reply_to.method, message_class, reply_to.transaction_id, tuple(attributes))
    return encode_message(message, integrity_key=reply_to.key, fingerprint=reply_to.fingerprint)


def success_response(reply_to: ReplyTo, attributes: tuple[Attribute, ...], software: str | None) -> bytes:
    """A success response with ``attributes``."""
    return _encode(reply_to, MessageClass.SUCCESS, list(attributes), software)


def error_response(
    reply_to: ReplyTo, error: RequestError, challenge: tuple[Attribute, ...], software: str | None
) -> bytes:
    """The error response for ``error``: ERROR-CODE with the class's code and no reason phrase,
    UNKNOWN-ATTRIBUTES for a 420, and ``challenge`` (REALM and a fresh NONCE) for 401 and 438."""
    attributes: list[Attribute] = [ErrorCodeAttribute(error.code)]
    if isinstance(error, UnknownAttributeError):
        attributes.append(UnknownAttributes(error.types))
    if error.challenge:
        attributes.extend(challenge)
    key = None if error.challenge else reply_to.key
    return _encode(reply_to._replace(key=key), MessageClass.ERROR, attributes, software)
