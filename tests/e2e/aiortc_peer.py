"""A kijkmee participant written with aiortc: joins through our signaling and answers offers."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiortc import RTCIceCandidate, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack, VideoStreamTrack
from aiortc.sdp import candidate_from_sdp

from tests.integration.sio_helpers import Participant


class AiortcParticipant:
    """Answers every peer's offers (it never offers itself, so it needs no glare handling)."""

    def __init__(self) -> None:
        self.signaling = Participant()
        self.pcs: dict[str, RTCPeerConnection] = {}
        self.frames: dict[str, int] = {}
        self.audio_frames: dict[str, int] = {}
        self._inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.signaling.sio.on("offer", lambda data: self._inbox.put_nowait(("offer", data)))
        self.signaling.sio.on("candidate", lambda data: self._inbox.put_nowait(("candidate", data)))

    async def join(self, base_url: str, room: str, name: str) -> dict[str, Any]:
        await self.signaling.connect(base_url)
        reply = await self.signaling.join(room, name)
        self._tasks.append(asyncio.create_task(self._work()))
        return reply

    def _connection(self, peer_id: str) -> RTCPeerConnection:
        pc = self.pcs.get(peer_id)
        if pc is None:
            pc = self.pcs[peer_id] = RTCPeerConnection()
            # Each connection gets its own sources: sharing one track across connections crashed aiortc.
            pc.addTrack(AudioStreamTrack())
            pc.addTrack(VideoStreamTrack())
            pc.on("track", lambda track: self._tasks.append(asyncio.create_task(self._count(peer_id, track))))
        return pc

    async def _count(self, peer_id: str, track: MediaStreamTrack) -> None:
        counter = self.frames if track.kind == "video" else self.audio_frames
        counter.setdefault(peer_id, 0)
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                counter[peer_id] += 1

    async def _work(self) -> None:
        while True:
            kind, data = await self._inbox.get()
            peer_id = data["from"]
            pc = self._connection(peer_id)
            if kind == "offer":
                await pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type="offer"))
                await pc.setLocalDescription(await pc.createAnswer())  # gathers candidates into the SDP
                await self.signaling.call("answer", {"to": peer_id, "sdp": pc.localDescription.sdp})
            elif data["candidate"] and data["candidate"]["candidate"]:
                init = data["candidate"]
                candidate: RTCIceCandidate = candidate_from_sdp(init["candidate"].split(":", 1)[1])
                candidate.sdpMid = init["sdpMid"]
                candidate.sdpMLineIndex = init["sdpMLineIndex"]
                await pc.addIceCandidate(candidate)

    def dtls_states(self, peer_id: str) -> set[str]:
        pc = self.pcs[peer_id]
        return {t.receiver.transport.state for t in pc.getTransceivers()}

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for pc in self.pcs.values():
            await pc.close()
        await self.signaling.close()


