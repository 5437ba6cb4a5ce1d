"""Credential keys and the MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT computations (RFC 8489 9.2, 14.5-14.7).

The functions here work on the bytes of a message *up to* the attribute being computed; the
header's length field is rewritten so that the message appears to end right after that attribute,
as RFC 8489 requires. :mod:`turn_relay.stun.message` calls them when encoding and verifying.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib

from turn_relay.stun.header import HEADER_SIZE

FINGERPRINT_XOR = 0x5354554E
_ATTR_HEADER_SIZE = 4
_SHA1_ATTR_SIZE = _ATTR_HEADER_SIZE + 20
_FINGERPRINT_ATTR_SIZE = _ATTR_HEADER_SIZE + 4


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """MD5(username ":" realm ":" password): the long-term credential key for MESSAGE-INTEGRITY.

    The strings are taken as they are: TURN REST usernames and passwords are ASCII, for which
    SASLprep/OpaqueString change nothing.
    """
    text = f"{username}:{realm}:{password}".encode()
    # MD5 is what RFC 8489 section 9.2.2 mandates for this key; it is not our choice.
    return hashlib.md5(text).digest()  # noqa: S324


def long_term_key_sha256(username: str, realm: str, password: str) -> bytes:
    """SHA-256(username ":" realm ":" password): the key for PASSWORD-ALGORITHM SHA-256."""
    return hashlib.sha256(f"{username}:{realm}:{password}".encode()).digest()


def short_term_key(password: str) -> bytes:
    """The short-term credential key: the password itself (ICE connectivity checks)."""
    return password.encode()


def _with_length(prefix: bytes, attribute_size: int) -> bytes:
    """``prefix`` with the header length set as if an attribute of ``attribute_size`` bytes followed."""
    if len(prefix) < HEADER_SIZE:
        raise ValueError(f"message prefix of {len(prefix)} bytes has no full header")
    length = len(prefix) - HEADER_SIZE + attribute_size
    return prefix[:2] + struct.pack("!H", length) + prefix[4:]


def compute_message_integrity(prefix: bytes, key: bytes) -> bytes:
    """HMAC-SHA1 for a MESSAGE-INTEGRITY attribute that would follow ``prefix``."""
    return hmac.new(key, _with_length(prefix, _SHA1_ATTR_SIZE), hashlib.sha1).digest()


def compute_message_integrity_sha256(prefix: bytes, key: bytes, size: int = 32) -> bytes:
    """HMAC-SHA256, truncated to ``size`` bytes, for a MESSAGE-INTEGRITY-SHA256 after ``prefix``."""
    digest = hmac.new(key, _with_length(prefix, _ATTR_HEADER_SIZE + size), hashlib.sha256).digest()
    return digest[:size]


def compute_fingerprint(prefix: bytes) -> int:
    """The FINGERPRINT value (CRC-32 XOR 0x5354554E) for a FINGERPRINT attribute after ``prefix``."""
    return zlib.crc32(_with_length(prefix, _FINGERPRINT_ATTR_SIZE)) ^ FINGERPRINT_XOR
