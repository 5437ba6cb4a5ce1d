"""The two aiortc peers of `kijkmee probe`: a call forced through one TURN relay and timed.

The caller sends VP8 video whose frames carry a sequence number drawn as black and white blocks; the
callee sends every frame it decodes straight back on its own track. The caller reads the number in
what comes back and so measures the media round trip: encode, SRTP, relay, decode, and back again.
Both connections use only relay candidates (iceTransportPolicy "relay"), so nothing but the TURN
server's address is ever contacted, and each connection has its own media source.

Imported only by `kijkmee probe` (aiortc is not a dependency of the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import ssl
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from av import VideoFrame

WIDTH, HEIGHT = 640, 360
"""Size of the probe's video frames."""
FPS = 30
"""Frames the caller sends per second."""
CELL = 40
"""Side of one marker block in pixels: VP8 keeps blocks this large black or white at any bitrate."""
BITS = 16
"""Bits of the sequence number; the second row of blocks repeats them inverted as a check."""
BLACK, WHITE, GREY = 16, 235, 128
"""Luma values of a 0 bit, a 1 bit and the background."""
TIME_BASE = fractions.Fraction(1, 90_000)
"""RTP video clock."""
NO_CA_FILE = "this aiortc/aioice version gives no way to apply --ca-file to turns:"


def marker_frame(seq: int) -> VideoFrame:
    """A grey frame with `seq` (mod 2**16) drawn in its top two rows of blocks."""
    frame = VideoFrame(WIDTH, HEIGHT, "yuv420p")
    luma = frame.planes[0]
    stride = luma.line_size
    pixels = bytearray([GREY]) * luma.buffer_size
    value = seq % (1 << BITS)
    for bit in range(BITS):
        one = bool(value >> (BITS - 1 - bit) & 1)
        for row, level in ((0, WHITE if one else BLACK), (1, BLACK if one else WHITE)):
            for y in range(row * CELL, (row + 1) * CELL):
                start = y * stride + bit * CELL
                pixels[start : start + CELL] = bytes([level]) * CELL
    luma.update(bytes(pixels))
    for chroma in frame.planes[1:]:
        chroma.update(bytes([128]) * chroma.buffer_size)
    frame.pts = seq * (TIME_BASE.denominator // FPS)
    frame.time_base = TIME_BASE
    return frame


def read_marker(frame: VideoFrame) -> int | None:
    """The sequence number `marker_frame` drew into `frame`, or None if the blocks do not check out."""
    grey = frame.reformat(width=WIDTH, height=HEIGHT, format="gray")
    plane = grey.planes[0]
    pixels, stride = bytes(plane), plane.line_size
    value = 0
    margin = CELL // 4
    for bit in range(BITS):
        levels = []
        for row in (0, 1):
            total = 0
            for y in range(row * CELL + margin, (row + 1) * CELL - margin):
                start = y * stride + bit * CELL + margin
                total += sum(pixels[start : start + CELL - 2 * margin])
            levels.append(total / (CELL - 2 * margin) ** 2)
        one, check = levels[0] > GREY, levels[1] > GREY
        if one == check:
            return None
        value = value << 1 | one
    return value


class MarkerSource(MediaStreamTrack):
    """The caller's video: numbered frames at `FPS`, remembering when each one left."""

    kind = "video"

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__()
        self.clock = clock
        self.sent: dict[int, float] = {}
        """Sequence number (mod 2**16) -> time its frame was handed to the encoder."""
        self.count = 0
        self._start: float | None = None

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = self.clock()
        await asyncio.sleep(max(0.0, self._start + self.count / FPS - self.clock()))
        frame = marker_frame(self.count)
        self.sent[self.count % (1 << BITS)] = self.clock()
        self.count += 1
        return frame


class Loopback(MediaStreamTrack):
    """The callee's video: every frame it receives, sent back (its own track, not a shared source)."""

    kind = "video"

    def __init__(self, remote: MediaStreamTrack) -> None:
        super().__init__()
        self.remote = remote

    async def recv(self) -> Any:
        return await self.remote.recv()


@dataclass
class RttMeter:
    """Reads returned frames on the caller and turns their markers into round-trip times."""

    source: MarkerSource
    wanted: int
    rtts: list[float] = field(default_factory=list)
    """Round trips in seconds, in arrival order."""
    returned: int = 0
    """Frames that came back decoded (with or without a readable marker)."""
    enough: asyncio.Event = field(default_factory=asyncio.Event)

    async def consume(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if not isinstance(frame, VideoFrame):
                    continue
                now = self.source.clock()
                self.returned += 1
                seq = read_marker(frame)
                sent = self.source.sent.pop(seq, None) if seq is not None else None
                if sent is not None:
                    self.rtts.append(now - sent)
                if len(self.rtts) >= self.wanted:
                    self.enough.set()


@dataclass(frozen=True)
class Route:
    """The candidate pair ICE nominated on one peer connection."""

    local_type: str
    remote_type: str
    local_address: str
    remote_address: str


@dataclass
class CallOutcome:
    """What the relayed call showed; `failure` is a plain reason, None when all went well."""

    failure: str | None = None
    setup_seconds: float | None = None
    routes: list[Route] = field(default_factory=list)
    rtts: list[float] = field(default_factory=list)
    frames_sent: int = 0
    frames_returned: int = 0

    def rtt_summary(self) -> tuple[float, float] | None:
        """(median, p95) in seconds, p95 by nearest rank; None without samples."""
        if not self.rtts:
            return None
        ordered = sorted(self.rtts)
        rank = max(1, -(-95 * len(ordered) // 100))
        return statistics.median(ordered), ordered[rank - 1]


def _ice_connections(pc: RTCPeerConnection) -> list[Any]:
    """The aioice Connection behind each transceiver (aiortc exposes no selected pair, nor TLS settings)."""
    return [t.sender.transport.transport.iceGatherer._connection for t in pc.getTransceivers()]


def use_tls_context(pc: RTCPeerConnection, context: ssl.SSLContext) -> bool:
    """Make turns: verify against `context` instead of the system trust store.

    aiortc hands aioice `turn_ssl=True`, which asyncio turns into `ssl.create_default_context()`;
    aioice passes whatever `turn_ssl` holds on to `loop.create_connection(ssl=...)`, so a context
    set here before candidates are gathered is the one the TLS handshake uses.
    """
    connections = _ice_connections(pc)
    if not connections or any(getattr(c, "turn_ssl", None) is not True for c in connections):
        return False  # aiortc/aioice changed: the context cannot be applied
    for connection in connections:
        connection.turn_ssl = context
    return True


def candidate_types(pc: RTCPeerConnection) -> tuple[set[str], set[str]]:
    """Types of the local and of the remote candidates of `pc` (public aiortc API)."""
    local: set[str] = set()
    remote: set[str] = set()
    for transceiver in pc.getTransceivers():
        ice = transceiver.sender.transport.transport
        local.update(c.type for c in ice.iceGatherer.getLocalCandidates())
        remote.update(c.type for c in ice.getRemoteCandidates())
    return local, remote


def nominated_routes(pc: RTCPeerConnection) -> list[Route]:
    """The nominated pairs of `pc`, read from aioice's private state (empty if that ever changes)."""
    routes = []
    for connection in _ice_connections(pc):
        for pair in getattr(connection, "_nominated", {}).values():
            local, remote = pair.local_candidate, pair.remote_candidate
            routes.append(Route(local.type, remote.type, f"{local.host}:{local.port}", f"{remote.host}:{remote.port}"))
    return routes


def _connection_failure(pc: RTCPeerConnection) -> str:
    for transceiver in pc.getTransceivers():
        dtls = transceiver.sender.transport
        if dtls.transport.state == "failed":
            return ("ICE checks between the two relayed addresses failed: the relay did not relay between "
                    "its own allocations (does its peer policy allow its relay addresses?)")
        if dtls.state == "failed":
            return "the DTLS handshake through the relay failed"
    return "the peer connection failed"


class _States:
    """Waits until both peer connections are connected, or one failed."""

    def __init__(self, pcs: tuple[RTCPeerConnection, RTCPeerConnection]) -> None:
        self.pcs = pcs
        self.changed = asyncio.Event()
        for pc in pcs:
            pc.on("connectionstatechange", self.changed.set)

    async def settle(self) -> RTCPeerConnection | None:
        """None once both are connected; the failed connection if one fails first."""
        while True:
            states = [pc.connectionState for pc in self.pcs]
            for pc, state in zip(self.pcs, states, strict=True):
                if state in ("failed", "closed"):
                    return pc
            if states == ["connected", "connected"]:
                return None
            self.changed.clear()
            await self.changed.wait()


async def relayed_call(server: RTCIceServer, tls: ssl.SSLContext | None, samples: int, timeout: float,
                       clock: Callable[[], float] = time.perf_counter) -> CallOutcome:
    """Connect two peers through `server` only, loop video back and measure; never raises on failure."""
    config = RTCConfiguration(iceServers=[server], iceTransportPolicy=RTCIceTransportPolicy.RELAY)
    caller, callee = RTCPeerConnection(config), RTCPeerConnection(config)
    source = MarkerSource(clock)
    meter = RttMeter(source, samples)
    outcome = CallOutcome()
    tasks: list[asyncio.Task[None]] = []
    caller.addTrack(source)
    caller.on("track", lambda track: tasks.append(asyncio.create_task(meter.consume(track))))
    remote_tracks: list[MediaStreamTrack] = []
    callee.on("track", remote_tracks.append)
    try:
        async with asyncio.timeout(timeout):
            await _connect(caller, callee, remote_tracks, tls, outcome, clock)
            if outcome.failure is None:
                await meter.enough.wait()
    except TimeoutError:
        outcome.failure = outcome.failure or _timeout_reason(outcome, meter, (caller, callee), timeout)
    except Exception as exc:  # aiortc raising is a failed probe to report, not a crash of the command
        outcome.failure = f"the WebRTC call failed: {type(exc).__name__}: {exc}"
    finally:
        outcome.rtts, outcome.frames_sent, outcome.frames_returned = meter.rtts, source.count, meter.returned
        for task in tasks:
            task.cancel()
        await asyncio.gather(caller.close(), callee.close(), return_exceptions=True)
    return outcome


async def _connect(caller: RTCPeerConnection, callee: RTCPeerConnection, remote_tracks: list[MediaStreamTrack],
                   tls: ssl.SSLContext | None, outcome: CallOutcome, clock: Callable[[], float]) -> None:
    """Offer/answer in-process, wait for both connections and check the route is relay/relay."""
    states = _States((caller, callee))
    start = clock()
    if tls is not None and not use_tls_context(caller, tls):
        outcome.failure = NO_CA_FILE
        return
    await caller.setLocalDescription(await caller.createOffer())  # gathers: allocates on the relay
    if not candidate_types(caller)[0]:
        outcome.failure = "no relay candidates: the relay did not answer or refused the allocation"
        return
    await callee.setRemoteDescription(caller.localDescription)
    for track in remote_tracks:
        callee.addTrack(Loopback(track))
    if tls is not None and not use_tls_context(callee, tls):
        outcome.failure = NO_CA_FILE
        return
    await callee.setLocalDescription(await callee.createAnswer())
    await caller.setRemoteDescription(callee.localDescription)
    failed = await states.settle()
    if failed is not None:
        outcome.failure = _connection_failure(failed)
        return
    outcome.setup_seconds = clock() - start
    outcome.routes = [route for pc in (caller, callee) for route in nominated_routes(pc)]
    for pc in (caller, callee):
        local, remote = candidate_types(pc)
        if local | remote != {"relay"}:
            outcome.failure = f"the call used candidates other than relay: {sorted(local | remote)}"
            return
    if any((route.local_type, route.remote_type) != ("relay", "relay") for route in outcome.routes):
        outcome.failure = "the nominated route is not relay/relay"


def _transport_states(pc: RTCPeerConnection) -> str:
    dtls = [t.sender.transport for t in pc.getTransceivers()]
    return ", ".join(f"ICE {d.transport.state}, DTLS {d.state}" for d in dtls) or "no transport"


def _timeout_reason(outcome: CallOutcome, meter: RttMeter, pcs: tuple[RTCPeerConnection, RTCPeerConnection],
                    timeout: float) -> str:
    if outcome.setup_seconds is None:
        states = "; ".join(f"{name}: {_transport_states(pc)}" for name, pc in zip(("caller", "callee"), pcs,
                                                                                   strict=True))
        return f"timeout: the peer connections did not connect through the relay within {timeout:.1f} s ({states})"
    if not meter.returned:
        return (f"timeout: connected, but no media came back within {timeout:.1f} s "
                "(the relay passed DTLS but not SRTP?)")
    return f"timeout: only {len(meter.rtts)} of {meter.wanted} marked frames came back within {timeout:.1f} s"
