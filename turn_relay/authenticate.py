"""Long-term credential checks of requests (RFC 8489 section 9.2.4) with TURN REST passwords.

The relay keeps no nonce state: nonces come from :func:`turn_relay.auth.make_nonce`, bound to
the client's transport address, and credentials from :class:`RestCredentialVerifier`.
"""

from __future__ import annotations

from typing import NamedTuple

from turn_relay.addresses import FiveTuple
from turn_relay.auth import CredentialRejected, NonceStatus, RestCredentialVerifier, check_nonce, make_nonce
from turn_relay.config import RelayConfig
from turn_relay.errors import BadRequest, CredentialsRefused, StaleNonce, Unauthenticated
from turn_relay.stun import Attribute, Message, MessageIntegrity, Nonce, Realm, Username, verify_message_integrity


class Authenticated(NamedTuple):
    """A request whose credentials checked out."""

    username: str
    """Its USERNAME."""
    key: bytes
    """The long-term key its MESSAGE-INTEGRITY matched; it signs the response."""


class Authenticator:
    """Checks requests' credentials and makes the REALM/NONCE challenge of 401 and 438 responses."""

    def __init__(self, config: RelayConfig, nonce_key: bytes) -> None:
        if not nonce_key:
            raise ValueError("the nonce key is empty")
        self._verifier = RestCredentialVerifier(config.secrets, config.realm, config.credential_clock_skew)
        self._realm = config.realm
        self._nonce_key = nonce_key
        self._nonce_lifetime = config.nonce_lifetime

    def replace_secrets(self, secrets: tuple[bytes, ...]) -> None:
        """Check credentials against ``secrets`` from now on (nonces stay valid)."""
        verifier = self._verifier
        self._verifier = RestCredentialVerifier(secrets, verifier.realm, verifier.clock_skew)

    def challenge(self, five_tuple: FiveTuple, now: float) -> tuple[Attribute, ...]:
        """REALM and a fresh NONCE bound to the client's transport address."""
        return Realm(self._realm), Nonce(make_nonce(self._nonce_key, now, five_tuple.client_label()))

    def authenticate(self, message: Message, five_tuple: FiveTuple, now: float) -> Authenticated:
        """The request's credentials, or a :class:`RequestError`: 401 without MESSAGE-INTEGRITY or
        with a nonce not ours, 400 without USERNAME/REALM/NONCE, 438 for an aged nonce,
        :class:`CredentialsRefused` (401) for credentials that do not check out."""
        if message.get(MessageIntegrity) is None:
            raise Unauthenticated("no MESSAGE-INTEGRITY")
        username, realm, nonce = message.get(Username), message.get(Realm), message.get(Nonce)
        if username is None or realm is None or nonce is None:
            raise BadRequest("MESSAGE-INTEGRITY without USERNAME, REALM and NONCE")
        status = check_nonce(self._nonce_key, nonce.text, now, five_tuple.client_label(), self._nonce_lifetime)
        if status is NonceStatus.STALE:
            raise StaleNonce("stale nonce")
        if status is NonceStatus.INVALID:
            raise Unauthenticated("nonce not issued to this client")
        try:
            key = self._verifier.verify(username.text, now, lambda key: verify_message_integrity(message, key))
        except CredentialRejected as exc:
            raise CredentialsRefused(str(exc)) from None
        return Authenticated(username.text, key)
