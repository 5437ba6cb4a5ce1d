"""The relay's one exception tree for refused requests (aioquic h3 style: the wire code on the class).

Request handlers raise these; :func:`turn_relay.responses.error_response` is the one place that
turns one into an error response with ERROR-CODE. No reason phrases are sent.
"""

from __future__ import annotations

from typing import ClassVar

from turn_relay.stun import ErrorCode


class RequestError(Exception):
    """A request the relay refuses; ``code`` is the ERROR-CODE it is answered with."""

    code: ClassVar[ErrorCode] = ErrorCode.SERVER_ERROR
    challenge: ClassVar[bool] = False
    """True when the response carries REALM and a fresh NONCE (401, 438)."""


class BadRequest(RequestError):
    """400: malformed, or a required attribute missing or out of range."""

    code = ErrorCode.BAD_REQUEST


class Unauthenticated(RequestError):
    """401: no credentials, a nonce we did not issue, or credentials that do not check out."""

    code = ErrorCode.UNAUTHENTICATED
    challenge = True


class Forbidden(RequestError):
    """403: the peer policy refuses the peer address."""

    code = ErrorCode.FORBIDDEN


class UnknownAttributeError(RequestError):
    """420: comprehension-required attributes the relay does not understand (or support)."""

    code = ErrorCode.UNKNOWN_ATTRIBUTE

    def __init__(self, types: tuple[int, ...]) -> None:
        super().__init__(", ".join(f"{attr_type:#06x}" for attr_type in types))
        self.types = types
        """Listed in the response's UNKNOWN-ATTRIBUTES."""


class AllocationMismatch(RequestError):
    """437: Allocate on a 5-tuple that has an allocation, or another request on one that has none."""

    code = ErrorCode.ALLOCATION_MISMATCH


class StaleNonce(RequestError):
    """438: a nonce we issued to this client, but too old."""

    code = ErrorCode.STALE_NONCE
    challenge = True


class AddressFamilyNotSupported(RequestError):
    """440: the requested address family is unknown or has no relay address here."""

    code = ErrorCode.ADDRESS_FAMILY_NOT_SUPPORTED


class WrongCredentials(RequestError):
    """441: a request on an allocation made with another USERNAME."""

    code = ErrorCode.WRONG_CREDENTIALS


class UnsupportedTransport(RequestError):
    """442: REQUESTED-TRANSPORT other than UDP."""

    code = ErrorCode.UNSUPPORTED_TRANSPORT_PROTOCOL


class PeerAddressFamilyMismatch(RequestError):
    """443: a peer address (or REQUESTED-ADDRESS-FAMILY in Refresh) of another family than the allocation."""

    code = ErrorCode.PEER_ADDRESS_FAMILY_MISMATCH


class AllocationQuotaReached(RequestError):
    """486: the USERNAME already holds as many allocations as allowed."""

    code = ErrorCode.ALLOCATION_QUOTA_REACHED


class InsufficientCapacity(RequestError):
    """508: no relayed port, total allocations, permissions or channels at their limit, or a
    reservation that cannot be honoured."""

    code = ErrorCode.INSUFFICIENT_CAPACITY


class CredentialsRefused(Unauthenticated):
    """401 for credentials that were checked and refused (bad MESSAGE-INTEGRITY, expired or malformed
    username) under a nonce the source really received: these count towards blocking the source."""
