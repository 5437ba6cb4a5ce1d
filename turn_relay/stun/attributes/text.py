"""UTF-8 text attributes: USERNAME, REALM, NONCE, SOFTWARE (RFC 8489 14.3, 14.9, 14.10, 14.14)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

from turn_relay.stun.attributes.base import Attribute, AttrType
from turn_relay.stun.errors import StunDecodeError

MAX_USERNAME_BYTES = 513
"""RFC 8489 asks for fewer than 509 bytes; RFC 5389 allowed up to 513, which we still accept."""
MAX_TEXT_CHARS = 127
"""REALM, NONCE, SOFTWARE and the ERROR-CODE reason: fewer than 128 characters (so at most 508
bytes of UTF-8; the RFC's 763-byte figure is for pre-RFC 3629 six-byte sequences)."""


def check_text(text: str, max_chars: int | None, max_bytes: int | None) -> None:
    """Check the RFC's size limits on a text value; raises ValueError."""
    if max_chars is not None and len(text) > max_chars:
        raise ValueError(f"{len(text)} characters, at most {max_chars} allowed")
    if max_bytes is not None and len(encoded := text.encode("utf-8")) > max_bytes:
        raise ValueError(f"{len(encoded)} bytes, at most {max_bytes} allowed")


def decode_text(value: bytes) -> str:
    """UTF-8 decode a value; raises StunDecodeError."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StunDecodeError(f"invalid UTF-8 at byte {exc.start}") from None


@dataclass(frozen=True)
class _TextAttribute(Attribute):
    text: str
    """The text, without padding."""

    MAX_CHARS: ClassVar[int | None] = MAX_TEXT_CHARS
    MAX_BYTES: ClassVar[int | None] = None

    def __post_init__(self) -> None:
        check_text(self.text, self.MAX_CHARS, self.MAX_BYTES)

    def encode_value(self, transaction_id: bytes) -> bytes:
        return self.text.encode("utf-8")

    @classmethod
    def decode_value(cls, value: bytes, transaction_id: bytes) -> Self:
        return cls(decode_text(value))


@dataclass(frozen=True)
class Username(_TextAttribute):
    """USERNAME: the user name of the credentials, e.g. ``1718000000:alice`` for TURN REST."""

    TYPE = AttrType.USERNAME
    MAX_CHARS = None
    MAX_BYTES = MAX_USERNAME_BYTES


@dataclass(frozen=True)
class Realm(_TextAttribute):
    """REALM: the long-term credential realm."""

    TYPE = AttrType.REALM


@dataclass(frozen=True)
class Nonce(_TextAttribute):
    """NONCE: the server's nonce, echoed by the client."""

    TYPE = AttrType.NONCE


@dataclass(frozen=True)
class Software(_TextAttribute):
    """SOFTWARE: a description of the sender's software (informational only)."""

    TYPE = AttrType.SOFTWARE
