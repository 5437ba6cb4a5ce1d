"""A man in the middle, for tests only: it sits in the signaling between two browsers and swaps keys.

What an attacker who controls signaling (a malicious or hacked signaling server) can do: when B offers
to A, it answers B itself and makes its own offer to A, so each browser sets up DTLS with the attacker,
who decrypts and re-encrypts the media between its two aiortc connections. Both calls work; only the
DTLS certificates differ, which is exactly what kijkmee's verification code is there to show.

It taps B's Socket.IO WebSocket inside the test (Playwright's `route_web_socket`), not the server: the
production server has no such hook. aiortc runs on its own event loop in a thread, because Playwright's
sync API owns the test's thread; the WebSocket handlers wait for it (`run`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import candidate_from_sdp
from av.frame import Frame
from av.packet import Packet
from playwright.sync_api import WebSocketRoute

T = TypeVar("T")

# Socket.IO over engine.io text frames: "4" (message) + "2" (event) + optional ack id + JSON array.
EVENT_RE = re.compile(r"^42(\d*)(\[.*)$", re.DOTALL)
FINGERPRINT_RE = re.compile(r"^a=fingerprint:(\S+) (\S+)\s*$", re.MULTILINE)


def fingerprint(sdp: str) -> tuple[str, str]:
    """(algorithm, fingerprint) of the DTLS certificate an SDP announces."""
    match = FINGERPRINT_RE.search(sdp)
    assert match, "no a=fingerprint in the SDP"
    return match.group(1), match.group(2)


def verification_code(one: tuple[str, str], other: tuple[str, str]) -> str:
    """The client's verification code (client_web/js/callstats.js verificationCode), written again."""
    lines = sorted(f"{algorithm.lower()} {value.upper()}" for algorithm, value in (one, other))
    digest = hashlib.sha256("\n".join(lines).encode()).digest()
    digits = f"{int.from_bytes(digest[:8], 'big') % 10**16:016d}"
    return " ".join(digits[i : i + 4] for i in range(0, 16, 4))


class Forward(MediaStreamTrack):
    """Sends on one connection what arrives on the other, once that track exists."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.source: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()

    async def recv(self) -> Frame | Packet[Any]:
        track = await self.source
        return await track.recv()


class Mitm:
    """`to_a` poses as B toward A; `to_b` poses as A toward B. Feed it B's signaling with `route_b`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.to_a: RTCPeerConnection
        self.to_b: RTCPeerConnection
        self.run(self._setup())
        self.a_id: str | None = None  # learned from B's first offer
        self.a_answer_sdp: str | None = None
        self.b_offer_sdp: str | None = None
        self.unexpected: list[str] = []  # signaling this simple attacker can't handle: the test fails on it
        self._waiting: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}

    async def _setup(self) -> None:
        self.to_a, self.to_b = RTCPeerConnection(), RTCPeerConnection()
        self.a_to_b = {kind: Forward(kind) for kind in ("audio", "video")}
        self.b_to_a = {kind: Forward(kind) for kind in ("audio", "video")}

        def relay(into: dict[str, Forward]) -> Any:
            def on_track(track: MediaStreamTrack) -> None:
                if not into[track.kind].source.done():
                    into[track.kind].source.set_result(track)

            return on_track

        self.to_a.on("track", relay(self.a_to_b))
        self.to_b.on("track", relay(self.b_to_a))

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 20) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        async def close() -> None:
            await self.to_a.close()
            await self.to_b.close()

        self.run(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    # ----------------------------------------------------------------------------- negotiation

    async def _b_offered(self, sdp: str) -> str:
        """B's offer to A: we will answer it ourselves; A gets our own offer instead (returned)."""
        self.b_offer_sdp = sdp
        await self.to_b.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        for transceiver in self.to_b.getTransceivers():
            self.to_b.addTrack(self.a_to_b[transceiver.kind])
        await self.to_b.setLocalDescription(await self.to_b.createAnswer())
        await self._flush("b")
        for kind in ("audio", "video"):
            self.to_a.addTrack(self.b_to_a[kind])
        await self.to_a.setLocalDescription(await self.to_a.createOffer())  # gathers: candidates are in it
        return str(self.to_a.localDescription.sdp)

    async def _a_answered(self, sdp: str) -> str:
        """A's answer to our offer: B gets our answer to its own offer instead (returned)."""
        self.a_answer_sdp = sdp
        await self.to_a.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        await self._flush("a")
        return str(self.to_b.localDescription.sdp)

    async def _candidate(self, side: str, init: dict[str, Any]) -> None:
        pc = self.to_a if side == "a" else self.to_b
        if pc.remoteDescription is None:
            self._waiting[side].append(init)
            return
        candidate = candidate_from_sdp(init["candidate"].split(":", 1)[1])
        candidate.sdpMid = init.get("sdpMid")
        candidate.sdpMLineIndex = init.get("sdpMLineIndex")
        await pc.addIceCandidate(candidate)

    async def _flush(self, side: str) -> None:
        waiting, self._waiting[side] = self._waiting[side], []
        for init in waiting:
            await self._candidate(side, init)

    # ------------------------------------------------------------------------------- WebSocket

    def route_b(self, ws: WebSocketRoute) -> None:
        """Playwright route handler for B's Socket.IO WebSocket: everything else passes unchanged."""
        server = ws.connect_to_server()

        def from_page(message: str | bytes) -> None:
            out = self._from_b(message, ws) if isinstance(message, str) else message
            if out is not None:
                server.send(out)

        def from_server(message: str | bytes) -> None:
            out = self._to_b(message) if isinstance(message, str) else message
            if out is not None:
                ws.send(out)

        ws.on_message(from_page)
        server.on_message(from_server)

    def _from_b(self, message: str, ws: WebSocketRoute) -> str | None:
        match = EVENT_RE.match(message)
        if not match:
            return message
        ack, (event, *args) = match.group(1), json.loads(match.group(2))
        payload = args[0] if args else {}
        if event == "offer":
            if self.a_id is not None:
                self.unexpected.append("B renegotiated")
                return message
            self.a_id = payload["to"]
            payload["sdp"] = self.run(self._b_offered(payload["sdp"]))
            return f"42{ack}{json.dumps([event, payload])}"
        if event == "candidate" and payload.get("to") == self.a_id:
            if payload.get("candidate", {}).get("candidate"):
                self.run(self._candidate("b", payload["candidate"]))
            if ack:  # B's ICE candidate went to us, not to A: acknowledge it as the server would
                ws.send(f"43{ack}{json.dumps([{'ok': True}])}")
            return None
        if event in ("answer",):
            self.unexpected.append(f"B sent {event}")
        return message

    def _to_b(self, message: str) -> str | None:
        match = EVENT_RE.match(message)
        if not match:
            return message
        ack, (event, *args) = match.group(1), json.loads(match.group(2))
        payload = args[0] if args else {}
        if self.a_id is None or payload.get("from") != self.a_id:
            return message
        if event == "answer":
            payload["sdp"] = self.run(self._a_answered(payload["sdp"]))
            return f"42{ack}{json.dumps([event, payload])}"
        if event == "candidate":
            if payload.get("candidate", {}).get("candidate"):
                self.run(self._candidate("a", payload["candidate"]))
            return None
        if event == "offer":
            self.unexpected.append("A offered")
        return message
