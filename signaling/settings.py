"""Settings the composition root hands to the signaling app."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from metadata_store.subprocessors import DEFAULT_SUBPROCESSORS, SubProcessor


class IceServersProvider(Protocol):
    """Given a peer id, the RTCIceServer dicts to hand that participant (our own STUN/TURN only), with
    credentials valid for the configured time, or for `ttl` seconds when that is shorter (the pre-join
    network check's throwaway credentials)."""

    def __call__(self, peer_id: str, ttl: int | None = None) -> list[dict[str, Any]]: ...


def credential_ttl(configured: int, shorter: int | None) -> int:
    """Seconds a relay credential is valid: the configured time, or `shorter` when asked and shorter."""
    return configured if shorter is None else max(1, min(configured, shorter))


def no_ice_servers(peer_id: str, ttl: int | None = None) -> list[dict[str, Any]]:
    """Host candidates only: used until a relay is configured. Never a public STUN server."""
    return []


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class SignalingSettings:
    client_dir: Path
    """Folder of the browser client (HTML, JS, CSS; node_modules inside for socket.io-client)."""

    public_url: str | None = None
    """Public https base URL for call links; None builds them from the Host the visitor used."""

    room_capacity: int = 3
    """Most people in one call."""

    room_ttl: dt.timedelta = dt.timedelta(hours=24)
    """How long a link stays valid after it was created or last left."""

    ice_servers: IceServersProvider = no_ice_servers
    """Our STUN/TURN servers with per-join credentials."""

    seat_grace: dt.timedelta = dt.timedelta(seconds=30)
    """How long a seat is kept after an unexpected disconnect (reload, network switch) for the same
    person to take back with its rejoin token; zero frees it at once."""

    ice_transport_policy: str = "all"
    """'all' (direct where possible) or 'relay'."""

    message_rate: float = 20.0
    """Signaling messages per second a connection may send on average."""

    message_burst: float = 120.0
    """Messages a connection may send at once (ICE candidates come in bursts)."""

    max_message_bytes: int = 80 * 1024
    """Largest Socket.IO message accepted; larger ones close the connection (an SDP is at most 64 KiB)."""

    subprocessors: tuple[SubProcessor, ...] = DEFAULT_SUBPROCESSORS
    """Sub-processors shown at /privacy/subprocessors (article 4 of the agreement)."""

    redis_url: str | None = None
    """Redis shared by several signaling nodes (seats and events between nodes); None: this process only."""

    redis_prefix: str = "kijkmee:"
    """Prefix of every Redis key and of the pub/sub channel, so several installations can share a Redis."""

    clock: Callable[[], dt.datetime] = field(default=utc_now)
    """Wall clock, injectable for tests."""
