"""TURN REST credentials compatible with coturn's ``use-auth-secret``, and stateless nonces.

Pure code: the time comes in as ``now`` (Unix seconds) and secrets are passed in.

Credentials (draft-uberti-behave-turn-rest, as coturn implements it): the username is
``"<expiry>:<user>"`` with ``expiry`` in Unix seconds, and the password is
``base64(HMAC-SHA1(secret, username))``. Signaling mints them; the relay, holding the same secret,
recomputes the password, so it needs no user database and coturn nodes can stand in for ours.

Nonces are ``"<issued, hex>.<MAC>"`` where the MAC is HMAC-SHA256 over the issue time and the
client's transport address under a key that never leaves the relay: the relay keeps no nonce state,
yet can tell a nonce it issued that has aged (438 Stale Nonce) from one it never issued (401).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass

from turn_relay.stun.integrity import long_term_key

REST_SEPARATOR = ":"
"""Between expiry and user name; coturn's ``rest-api-separator`` default."""
MAX_USERNAME_BYTES = 508
"""RFC 8489: USERNAME holds fewer than 509 bytes."""
DEFAULT_CLOCK_SKEW = 30.0
"""Seconds a username may be past its expiry, for clocks of signaling and relay that disagree."""
DEFAULT_NONCE_LIFETIME = 600.0
"""Seconds a nonce stays valid; coturn's ``stale-nonce`` default."""

_EXPIRY = re.compile(r"[0-9]{1,12}")
_NONCE = re.compile(r"([0-9a-f]{1,12})\.([A-Za-z0-9_-]{22})")
_NONCE_MAC_SIZE = 16


def rest_password(secret: bytes, username: str) -> str:
    """``base64(HMAC-SHA1(secret, username))``: the password coturn expects for ``username``."""
    mac = hmac.new(secret, username.encode(), hashlib.sha1).digest()
    return base64.b64encode(mac).decode("ascii")


def mint_turn_credentials(secret: bytes, user: str, now: float, ttl: int) -> tuple[str, str]:
    """Return ``(username, password)`` valid until ``now + ttl``; ``user`` may be empty.

    ``user`` should not be personal data: it is sent in clear in every TURN request.
    """
    if not secret:
        raise ValueError("the TURN secret is empty")
    if ttl <= 0:
        raise ValueError(f"ttl {ttl} is not positive")
    expiry = int(now) + ttl
    username = f"{expiry}{REST_SEPARATOR}{user}" if user else str(expiry)
    if len(username.encode()) > MAX_USERNAME_BYTES:
        raise ValueError(f"username of {len(username.encode())} bytes exceeds {MAX_USERNAME_BYTES}")
    return username, rest_password(secret, username)


class RejectReason(enum.Enum):
    """Why a TURN REST credential was refused (all are answered with 401)."""

    MALFORMED_USERNAME = "malformed-username"
    EXPIRED = "expired"
    BAD_INTEGRITY = "bad-integrity"


class CredentialRejected(Exception):
    """A TURN REST credential was refused; :attr:`reason` says why, for counting."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason


def username_expiry(username: str) -> int:
    """The expiry time encoded in a TURN REST username; raises :class:`CredentialRejected`."""
    head = username.split(REST_SEPARATOR, 1)[0]
    if not _EXPIRY.fullmatch(head):
        raise CredentialRejected(RejectReason.MALFORMED_USERNAME, "no expiry timestamp before the separator")
    return int(head)


@dataclass(frozen=True)
class RestCredentialVerifier:
    """Checks TURN REST usernames and derives the long-term keys their passwords give."""

    secrets: tuple[bytes, ...]
    """Shared secrets, the current one first. To rotate, add the new one in front and drop the old
    one when the longest TTL minted with it has passed."""
    realm: str
    """The REALM the relay announces; part of the long-term key."""
    clock_skew: float = DEFAULT_CLOCK_SKEW
    """Seconds a username is still accepted after its expiry."""

    def __post_init__(self) -> None:
        if not self.secrets or not all(self.secrets):
            raise ValueError("at least one secret is needed and none may be empty")
        if self.clock_skew < 0:
            raise ValueError(f"clock skew {self.clock_skew} is negative")

    def candidate_keys(self, username: str, now: float) -> tuple[bytes, ...]:
        """The long-term key for each secret, or :class:`CredentialRejected` if malformed or expired."""
        expiry = username_expiry(username)
        if now > expiry + self.clock_skew:
            raise CredentialRejected(RejectReason.EXPIRED, f"expired {now - expiry:.0f} s ago")
        return tuple(
            long_term_key(username, self.realm, rest_password(secret, username)) for secret in self.secrets
        )

    def verify(self, username: str, now: float, integrity_matches: Callable[[bytes], bool]) -> bytes:
        """Return the long-term key under which ``integrity_matches`` holds (the request's
        MESSAGE-INTEGRITY check), trying each secret; raise :class:`CredentialRejected` otherwise.
        """
        for key in self.candidate_keys(username, now):
            if integrity_matches(key):
                return key
        raise CredentialRejected(RejectReason.BAD_INTEGRITY, "no secret gives a matching MESSAGE-INTEGRITY")


class NonceStatus(enum.Enum):
    """Outcome of :func:`check_nonce`."""

    VALID = "valid"
    STALE = "stale"
    """Issued by us for this client, but too old (or the clock went back): answer 438 Stale Nonce."""
    INVALID = "invalid"
    """Not issued by us for this client: answer 401 with a fresh nonce."""


def _nonce_mac(key: bytes, issued: int, client_addr: str) -> str:
    mac = hmac.new(key, f"{issued:x}|{client_addr}".encode(), hashlib.sha256).digest()[:_NONCE_MAC_SIZE]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def make_nonce(key: bytes, now: float, client_addr: str) -> str:
    """A nonce for ``client_addr`` (any stable text for the client's transport address and protocol,
    e.g. ``"udp/203.0.113.5:49152"``), issued at ``now``.

    ``key`` is a random secret the relay makes at start-up. The nonce is at most 35 characters of
    ``[0-9a-f.A-Za-z_-]``: safe inside a quoted-string and far below the 128-character limit. It never
    starts with RFC 8489's ``obMatJos2`` cookie, as we offer none of those security features.
    """
    if not key:
        raise ValueError("the nonce key is empty")
    issued = int(now)
    return f"{issued:x}.{_nonce_mac(key, issued, client_addr)}"


def check_nonce(
    key: bytes, nonce: str, now: float, client_addr: str, lifetime: float = DEFAULT_NONCE_LIFETIME
) -> NonceStatus:
    """Check a nonce from a request against :func:`make_nonce`'s output. Never raises."""
    match = _NONCE.fullmatch(nonce)
    if match is None:
        return NonceStatus.INVALID
    issued = int(match.group(1), 16)
    if match.group(1) != f"{issued:x}":  # one spelling per nonce: no leading zeros
        return NonceStatus.INVALID
    if not hmac.compare_digest(match.group(2), _nonce_mac(key, issued, client_addr)):
        return NonceStatus.INVALID
    if not issued <= now < issued + lifetime:
        return NonceStatus.STALE
    return NonceStatus.VALID
