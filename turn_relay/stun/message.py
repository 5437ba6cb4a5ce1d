"""STUN messages: decode, encode, and check MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT (RFC 8489)."""

from __future__ import annotations

import hmac
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from turn_relay.stun.attributes import (
    ATTRIBUTE_CLASSES,
    Attribute,
    AttrType,
    Fingerprint,
    MessageIntegrity,
    MessageIntegritySha256,
    UnknownAttribute,
    attr_name,
    is_comprehension_required,
)
from turn_relay.stun.errors import StunDecodeError
from turn_relay.stun.header import (
    HEADER_SIZE,
    MAX_METHOD,
    TRANSACTION_ID_SIZE,
    MessageClass,
    StunHeader,
    decode_header,
    encode_header,
)
from turn_relay.stun.integrity import (
    compute_fingerprint,
    compute_message_integrity,
    compute_message_integrity_sha256,
)

A = TypeVar("A", bound=Attribute)

_ATTR_HEADER = struct.Struct("!HH")
_MAX_VALUE = 0xFFFF


@dataclass(frozen=True)
class Message:
    """A STUN message: header fields and typed attributes, in wire order."""

    method: int
    """A :class:`~turn_relay.stun.header.Method` when known, else the raw 12-bit number."""
    message_class: MessageClass
    """Request, indication, success or error response."""
    transaction_id: bytes
    """The 96-bit transaction id (passed in: this codec has no randomness)."""
    attributes: tuple[Attribute, ...] = ()
    """Attributes in order. Decoding leaves out those RFC 8489 says to ignore after an integrity one."""
    raw: bytes = field(default=b"", repr=False, compare=False)
    """The bytes a decoded message came from (empty for one built in code); integrity checks use it.
    ``dataclasses.replace`` carries it over unchanged, so verify only messages fresh from decoding."""

    def __post_init__(self) -> None:
        if len(self.transaction_id) != TRANSACTION_ID_SIZE:
            raise ValueError(f"transaction id is {len(self.transaction_id)} bytes, not 12")
        if not 0 <= self.method <= MAX_METHOD:
            raise ValueError(f"method {self.method:#x} does not fit in 12 bits")

    def get(self, kind: type[A]) -> A | None:
        """The first attribute of ``kind`` (RFC 8489: only the first of duplicates counts), or None."""
        for attribute in self.attributes:
            if isinstance(attribute, kind):
                return attribute
        return None

    def get_all(self, kind: type[A]) -> list[A]:
        """Every attribute of ``kind``, in order (e.g. XOR-PEER-ADDRESS in CreatePermission)."""
        return [attribute for attribute in self.attributes if isinstance(attribute, kind)]

    @property
    def unknown_required(self) -> tuple[int, ...]:
        """Types of unknown comprehension-required attributes: a request with any gets a 420."""
        return tuple(
            attribute.type
            for attribute in self.attributes
            if isinstance(attribute, UnknownAttribute) and is_comprehension_required(attribute.type)
        )


def _walk(data: bytes, header: StunHeader) -> Iterator[tuple[int, int, bytes]]:
    """Yield (type, offset of the attribute header, value) for each attribute of a checked message.

    After decode_message's length checks (a multiple of 4, equal to what follows the header) the
    truncation and padding guards cannot fire; they keep _walk safe on any header it is given.
    """
    offset, end = HEADER_SIZE, HEADER_SIZE + header.length
    while offset < end:
        if end - offset < _ATTR_HEADER.size:
            raise StunDecodeError(f"attribute header truncated at offset {offset}", header)
        attr_type, length = _ATTR_HEADER.unpack_from(data, offset)
        start = offset + _ATTR_HEADER.size
        padded_end = start + length + (-length % 4)
        if start + length > end:
            raise StunDecodeError(
                f"{attr_name(attr_type)} length {length} overruns the message "
                f"({end - start} bytes left at offset {start})",
                header,
            )
        if padded_end > end:
            name = attr_name(attr_type)
            raise StunDecodeError(f"{name} padding missing at offset {start + length}", header)
        yield attr_type, offset, data[start : start + length]
        offset = padded_end


def _decode_attribute(attr_type: int, value: bytes, header: StunHeader) -> Attribute:
    cls = ATTRIBUTE_CLASSES.get(attr_type)
    if cls is None:
        return UnknownAttribute(attr_type, value)
    try:
        return cls.decode_value(value, header.transaction_id)
    # StunDecodeError and UnicodeDecodeError are ValueErrors too.
    except (ValueError, struct.error, IndexError) as exc:
        raise StunDecodeError(f"{attr_name(attr_type)}: {exc}", header) from None


def decode_message(data: bytes) -> Message:
    """Decode one STUN message; raises only :class:`StunDecodeError`.

    Besides the header checks of :func:`decode_header`, the length must equal the bytes after the
    header and every attribute must fit with its padding (padding bytes may hold any value).
    Attributes after MESSAGE-INTEGRITY other than MESSAGE-INTEGRITY-SHA256 and FINGERPRINT, and
    after MESSAGE-INTEGRITY-SHA256 other than FINGERPRINT, are skipped unparsed; FINGERPRINT must
    be last. Unknown attribute types become :class:`UnknownAttribute`.
    """
    data = bytes(data)
    header = decode_header(data)
    if header.length != len(data) - HEADER_SIZE:
        raise StunDecodeError(
            f"length {header.length} does not match the {len(data) - HEADER_SIZE} bytes after the header",
            header,
        )
    attributes: list[Attribute] = []
    after_sha1 = after_sha256 = after_fingerprint = False
    for attr_type, _offset, value in _walk(data, header):
        if after_fingerprint:
            raise StunDecodeError(f"{attr_name(attr_type)} follows FINGERPRINT", header)
        after_fingerprint = attr_type == AttrType.FINGERPRINT
        if after_sha256 and not after_fingerprint:
            continue
        if after_sha1 and not after_fingerprint and attr_type != AttrType.MESSAGE_INTEGRITY_SHA256:
            continue
        attributes.append(_decode_attribute(attr_type, value, header))
        after_sha1 = after_sha1 or attr_type == AttrType.MESSAGE_INTEGRITY
        after_sha256 = after_sha256 or attr_type == AttrType.MESSAGE_INTEGRITY_SHA256
    return Message(header.method, header.message_class, header.transaction_id, tuple(attributes), data)


def _encode_attribute(attr_type: int, value: bytes, pad_byte: int) -> bytes:
    if len(value) > _MAX_VALUE:
        raise ValueError(f"{attr_name(attr_type)} value of {len(value)} bytes does not fit in 16 bits")
    return _ATTR_HEADER.pack(attr_type, len(value)) + value + bytes([pad_byte]) * (-len(value) % 4)


def encode_message(
    message: Message,
    *,
    integrity_key: bytes | None = None,
    integrity_sha256_key: bytes | None = None,
    fingerprint: bool = False,
    pad_byte: int = 0,
) -> bytes:
    """Encode ``message`` and append, in this order, the integrity attributes and FINGERPRINT asked for.

    Attributes in ``message.attributes`` are written as they are, integrity ones included (so a
    decoded message re-encodes unchanged). ``pad_byte`` fills the padding: 0 on the wire, but any
    value is legal (RFC 5769's vectors pad with spaces).
    """
    tid = message.transaction_id
    body = bytearray()
    for attribute in message.attributes:
        body += _encode_attribute(attribute.type_code(), attribute.encode_value(tid), pad_byte)

    def encoded() -> bytes:
        return encode_header(message.method, message.message_class, len(body), tid) + body

    if integrity_key is not None:
        body += _encode_attribute(
            AttrType.MESSAGE_INTEGRITY, compute_message_integrity(encoded(), integrity_key), pad_byte
        )
    if integrity_sha256_key is not None:
        digest = compute_message_integrity_sha256(encoded(), integrity_sha256_key)
        body += _encode_attribute(AttrType.MESSAGE_INTEGRITY_SHA256, digest, pad_byte)
    if fingerprint:
        crc = struct.pack("!I", compute_fingerprint(encoded()))
        body += _encode_attribute(AttrType.FINGERPRINT, crc, pad_byte)
    return encoded()


def _find(message: Message, attr_type: int) -> tuple[int, bytes] | None:
    """Offset and value of the first ``attr_type`` attribute in ``message.raw``."""
    if not message.raw:
        raise ValueError("message was not decoded from bytes: nothing to verify")
    header = decode_header(message.raw)
    for found_type, offset, value in _walk(message.raw, header):
        if found_type == attr_type:
            return offset, value
    return None


def verify_message_integrity(message: Message, key: bytes) -> bool:
    """True if the first MESSAGE-INTEGRITY of a decoded message matches ``key``; False if absent."""
    if message.get(MessageIntegrity) is None:
        return False
    found = _find(message, AttrType.MESSAGE_INTEGRITY)
    if found is None:
        return False
    offset, value = found
    return hmac.compare_digest(value, compute_message_integrity(message.raw[:offset], key))


def verify_message_integrity_sha256(message: Message, key: bytes) -> bool:
    """True if the MESSAGE-INTEGRITY-SHA256 (possibly truncated) matches ``key``; False if absent."""
    if message.get(MessageIntegritySha256) is None:
        return False
    found = _find(message, AttrType.MESSAGE_INTEGRITY_SHA256)
    if found is None:
        return False
    offset, value = found
    expected = compute_message_integrity_sha256(message.raw[:offset], key, len(value))
    return hmac.compare_digest(value, expected)


def verify_fingerprint(message: Message) -> bool:
    """True if the decoded message ends with a FINGERPRINT that matches its bytes; False if absent."""
    attribute = message.get(Fingerprint)
    if attribute is None:
        return False
    found = _find(message, AttrType.FINGERPRINT)
    if found is None:
        return False
    return attribute.crc == compute_fingerprint(message.raw[: found[0]])
