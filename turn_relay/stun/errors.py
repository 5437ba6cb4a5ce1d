"""The codec's one error exit."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from turn_relay.stun.header import StunHeader


class StunDecodeError(ValueError):
    """Malformed STUN message, ChannelData message or stream frame.

    Every decoder in :mod:`turn_relay.stun` raises only this for bad input, whatever the bytes.
    """

    def __init__(self, message: str, header: StunHeader | None = None) -> None:
        super().__init__(message)
        self.header = header
        """The message header when it was readable, so a server can still answer 400 Bad Request."""
