"""Load generator: simulated participants speaking our signaling protocol over a raw Engine.IO 4 /
Socket.IO 5 WebSocket, many per process.

python-socketio's AsyncClient costs a session, several tasks and a few hundred KB per participant, which
puts 10,000 of them out of reach of two cores shared with the server. This client is one aiohttp
WebSocket and one reader task per participant and speaks exactly the frames the browser's socket.io
client sends on a WebSocket: `40` to open the namespace, `42<id>["join",{...}]` with an ack id, `3` for
each ping, and events without acks. Every other behaviour (what a join does, the offer/answer/candidate
exchange) is the server's own.

A worker (`python bench/signaling_load/client.py`) reads one JSON job and then JSON commands from stdin,
one a line, and answers each with one JSON line on stdout; see run.py for the sequence.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

SDP_LINES = [
    "v=0", "o=- 4611731400430051336 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
    "a=extmap-allow-mixed", "a=msid-semantic: WMS stream",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126", "c=IN IP4 0.0.0.0", "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:Lx3n", "a=ice-pwd:E3q8Qm6V8n0wq4YlVh2x2yKq", "a=ice-options:trickle",
    "a=fingerprint:sha-256 " + ":".join(["7B"] * 32), "a=setup:actpass", "a=mid:0",
    *[f"a=extmap:{i} urn:ietf:params:rtp-hdrext:example-{i}" for i in range(1, 6)],
    "a=sendrecv", "a=msid:stream audio", "a=rtcp-mux", "a=rtpmap:111 opus/48000/2",
    "a=rtcp-fb:111 transport-cc", "a=fmtp:111 minptime=10;useinbandfec=1",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 100 101 45 46", "c=IN IP4 0.0.0.0", "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:Lx3n", "a=ice-pwd:E3q8Qm6V8n0wq4YlVh2x2yKq", "a=ice-options:trickle",
    "a=fingerprint:sha-256 " + ":".join(["7B"] * 32), "a=setup:actpass", "a=mid:1",
    *[f"a=extmap:{i} urn:ietf:params:rtp-hdrext:video-{i}" for i in range(6, 16)],
    "a=sendrecv", "a=msid:stream video", "a=rtcp-mux", "a=rtcp-rsize",
    *[line for pt in (96, 98, 100, 45) for line in (
        f"a=rtpmap:{pt} VP8/90000", f"a=rtcp-fb:{pt} goog-remb", f"a=rtcp-fb:{pt} transport-cc",
        f"a=rtcp-fb:{pt} ccm fir", f"a=rtcp-fb:{pt} nack", f"a=rtcp-fb:{pt} nack pli",
        f"a=rtpmap:{pt + 1} rtx/90000", f"a=fmtp:{pt + 1} apt={pt}")],
    "a=ssrc-group:FID 1111111111 2222222222", "a=ssrc:1111111111 cname:abcdefghijklmnop",
    "a=ssrc:2222222222 cname:abcdefghijklmnop",
]
SDP = "\r\n".join(SDP_LINES) + "\r\n"
"""A stand-in offer/answer of browser size (~3 KB: audio + video, bundle, rtx); the server only checks
its size and passes it on."""
CANDIDATES = [
    {"candidate": "candidate:1 1 udp 2122260223 192.0.2.10 50000 typ host generation 0 ufrag Lx3n",
     "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "Lx3n"},
    {"candidate": "candidate:2 1 udp 1686052607 198.51.100.10 50001 typ srflx raddr 192.0.2.10 rport 50000",
     "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "Lx3n"},
]


class Closed(Exception):
    """The connection ended before an answer came."""


@dataclass
class Participant:
    """One simulated person: a WebSocket, its pending acks and what it has seen."""

    url: str
    room: str
    stats: Stats
    ws: aiohttp.ClientWebSocketResponse | None = None
    peer_id: str | None = None
    acks: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=itertools.count)
    reader: asyncio.Task[None] | None = None
    alive: bool = False
    answers_due: int = 0
    joined_at: float = 0.0

    async def connect(self, session: aiohttp.ClientSession) -> None:
        endpoint = self.url.replace("https://", "wss://") + "/socket.io/?EIO=4&transport=websocket"
        # Offer permessage-deflate, as every browser does: a server that accepts it pays for it in memory
        # and CPU on every connection, and the bench should see that (kijkmee declines it).
        self.ws = await session.ws_connect(endpoint, ssl=False, autoping=True, max_msg_size=1 << 20, compress=15)
        opened = await self.ws.receive_str(timeout=30)
        if not opened.startswith("0"):
            raise ConnectionError(f"not an Engine.IO open packet: {opened[:40]!r}")
        await self.ws.send_str("40")
        while True:  # the namespace's CONNECT answer (pings may come first on a slow machine)
            frame = await self.ws.receive_str(timeout=30)
            if frame == "2":
                await self.ws.send_str("3")
                continue
            if frame.startswith("40"):
                break
            raise ConnectionError(f"namespace refused: {frame[:80]!r}")
        self.alive = True
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        try:
            async for message in self.ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    break
                data: str = message.data
                if data == "2":
                    await self.ws.send_str("3")
                elif data.startswith("43"):
                    bracket = data.index("[")
                    future = self.acks.pop(int(data[2:bracket]), None)
                    if future is not None and not future.done():
                        future.set_result(json.loads(data[bracket:])[0])
                elif data.startswith("42"):
                    name, payload = json.loads(data[2:])
                    await self._on_event(name, payload)
                elif data.startswith("41") or data.startswith("1"):
                    break
        except (aiohttp.ClientError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.alive = False
            for future in self.acks.values():
                if not future.done():
                    future.set_exception(Closed())

    async def _send(self, event: str, data: Any) -> None:
        assert self.ws is not None
        await self.ws.send_str("42" + json.dumps([event, data], separators=(",", ":")))

    async def call(self, event: str, data: Any) -> Any:
        assert self.ws is not None
        ack = next(self.ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks[ack] = future
        await self.ws.send_str(f"42{ack}" + json.dumps([event, data], separators=(",", ":")))
        return await future

    async def join(self) -> float:
        """Join; returns seconds from sending the join to the ack that holds the peer list, and starts
        the negotiation with every peer already there (the newcomer offers, as the browser does)."""
        started = time.perf_counter()
        reply = await self.call("join", {"room": self.room})
        elapsed = time.perf_counter() - started
        if not reply.get("ok"):
            raise RuntimeError(str(reply.get("error")))
        self.peer_id = reply["self"]
        self.joined_at = started
        self.answers_due = len(reply["peers"])
        if self.answers_due:
            self.stats.negotiations_expected += 1
        for peer in reply["peers"]:
            await self._send("offer", {"to": peer["id"], "sdp": SDP})
        return elapsed

    async def _on_event(self, name: str, payload: dict[str, Any]) -> None:
        self.stats.events += 1
        if name == "offer":
            await self._send("answer", {"to": payload["from"], "sdp": SDP})
            for candidate in CANDIDATES:
                await self._send("candidate", {"to": payload["from"], "candidate": candidate})
        elif name == "answer":
            for candidate in CANDIDATES:
                await self._send("candidate", {"to": payload["from"], "candidate": candidate})
            self.answers_due -= 1
            if self.answers_due == 0:
                self.stats.negotiated.append(time.perf_counter() - self.joined_at)
        elif name == "signal-error":
            self.stats.signal_errors += 1

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        if self.ws is not None:
            await self.ws.close()


@dataclass
class Stats:
    events: int = 0
    signal_errors: int = 0
    negotiations_expected: int = 0
    """Newcomers that found others in the call and so offered to them."""
    negotiated: list[float] = field(default_factory=list)
    """Per such newcomer: seconds from its join to the last answer it needed."""


class Worker:
    def __init__(self, job: dict[str, Any]) -> None:
        self.stats = Stats()
        # [room, url] per participant, in the order the job lists them (members of a room in join order).
        self.people = [Participant(url, room, self.stats) for room, url in job["people"]]
        self.session: aiohttp.ClientSession | None = None

    async def connect(self, window: int) -> dict[str, Any]:
        """Connect everyone, `window` handshakes (TLS, Engine.IO open, namespace) in flight at most: as
        fast as the server takes them, without piling up work that would delay its pings."""
        connector = aiohttp.TCPConnector(limit=0, ssl=False)
        self.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
        started = time.perf_counter()
        failures: list[str] = []

        async def one(person: Participant) -> None:
            try:
                await person.connect(self.session)  # type: ignore[arg-type]
            except Exception as exc:
                failures.append(type(exc).__name__)

        await windowed([one(p) for p in self.people], window)
        return {"connected": sum(p.alive for p in self.people), "failed": len(failures),
                "failures": summarize(failures), "seconds": time.perf_counter() - started}

    async def join(self, rate: float | None, window: int, start_at: float) -> dict[str, Any]:
        """rate: joins/s on a fixed schedule (open loop); None: as fast as acks come back, `window` joins
        outstanding at most (closed loop). Latency is from the join sent to its ack."""
        await asyncio.sleep(max(0.0, start_at - time.time()))
        alive_before = sum(p.alive for p in self.people)
        latencies: list[float] = []
        lateness: list[float] = []
        errors: list[str] = []
        first, last = time.time(), 0.0  # the moment the first join goes out (after the common start)
        begin = time.perf_counter()

        async def one(index: int, person: Participant) -> None:
            nonlocal last
            if rate is not None:
                due = begin + index / rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                lateness.append(time.perf_counter() - due)
            if not person.alive:
                errors.append("not-connected")
                return
            try:
                latencies.append(await asyncio.wait_for(person.join(), 60))
                last = max(last, time.time())
            except Exception as exc:
                errors.append(str(exc) or type(exc).__name__)

        if rate is not None:
            await asyncio.gather(*(one(i, p) for i, p in enumerate(self.people)))
        else:
            await windowed([one(i, p) for i, p in enumerate(self.people)], window)
        await asyncio.sleep(2.0)  # let the offer/answer/candidate exchanges that the last joins started finish
        return {"latencies": latencies, "lateness": lateness, "errors": summarize(errors), "first": first,
                "last": last, "negotiated": self.stats.negotiated,
                "negotiations_expected": self.stats.negotiations_expected,
                "signal_errors": self.stats.signal_errors, "events": self.stats.events,
                "alive_before": alive_before, "alive_after": sum(p.alive for p in self.people)}

    async def hold(self, seconds: float) -> dict[str, Any]:
        alive_before = sum(p.alive for p in self.people)
        await asyncio.sleep(seconds)
        return {"alive_before": alive_before, "alive_after": sum(p.alive for p in self.people),
                "joined": sum(p.peer_id is not None for p in self.people)}

    async def close(self) -> dict[str, Any]:
        await asyncio.gather(*(p.close() for p in self.people), return_exceptions=True)
        if self.session is not None:
            await self.session.close()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"cpu_seconds": usage.ru_utime + usage.ru_stime}


def summarize(errors: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for error in errors:
        counts[error] = counts.get(error, 0) + 1
    return counts


async def windowed(jobs: list[Any], window: int) -> None:
    """Run the coroutines in order, `window` at a time (closed loop: the next starts when one ends)."""
    queue = iter(jobs)

    async def lane() -> None:
        for job in queue:
            await job

    await asyncio.gather(*(lane() for _ in range(window)))


async def main() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)  # the job line lists thousands of participants
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = Worker(json.loads(await reader.readline()))

    def answer(result: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()

    answer({"ready": True, "pid": os.getpid(), "people": len(worker.people)})
    while line := await reader.readline():
        command = json.loads(line)
        match command["cmd"]:
            case "connect":
                answer(await worker.connect(command["window"]))
            case "join":
                answer(await worker.join(command.get("rate"), command.get("window", 100), command["start_at"]))
            case "hold":
                answer(await worker.hold(command["seconds"]))
            case "close":
                answer(await worker.close())
                return


if __name__ == "__main__":
    asyncio.run(main())
