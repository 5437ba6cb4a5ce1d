"""The floor to compare with: a bare three-way WebRTC call, nothing but the steps any call must take.

One HTML page with one inline script, served over HTTPS (the same kind of self-signed ECDSA certificate
and TLS policy as `kijkmee serve`) by a few lines of aiohttp in the bench process, with a WebSocket that
only passes messages between the people of a room. The page does what every browser call does and
nothing else: getUserMedia with the same constraints as kijkmee (960x540, 24 fps, echo cancellation
etc.), a WebSocket, "join" → the ids of those already there, the newcomer offers to each with trickled
ICE candidates (host candidates only: no relay, no STUN), remote video shown in a <video>. No modules,
no translations, no pre-join check, no store, no TURN allocations, no stats monitor, no access control.

It offers the bench probe the same hooks as kijkmee's page (a `#join` button enabled when the camera
and the connection are ready, `window.kijkmee.state` and `.pcs`), so both are measured by the very same
probe in the same browsers, run for run. What kijkmee adds to a call's set-up is the difference.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import ssl
from collections import defaultdict
from pathlib import Path

from aiohttp import WSMsgType, web

from kijkmee.devcert import ensure_dev_certificate
from kijkmee.tls import TlsPolicy

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bare call</title>
<style>video { width: 320px; height: 180px; background: #000; }</style></head>
<body>
<button id="join" disabled>Join</button>
<video id="self" autoplay muted playsinline></video>
<div id="tiles"></div>
<script>
'use strict';
const room = location.hash.slice(1);
const pcs = new Map();
const api = window.kijkmee = { state: 'prejoin', pcs };
let stream = null;
let ws = null;
let self = null;
const join = document.getElementById('join');
const send = (message) => ws.send(JSON.stringify(message));
const ready = () => { if (stream && ws && ws.readyState === 1) join.disabled = false; };

navigator.mediaDevices.getUserMedia({
  audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  video: { width: { ideal: 960 }, height: { ideal: 540 }, frameRate: { ideal: 24, max: 30 } },
}).then((s) => { stream = s; document.getElementById('self').srcObject = s; ready(); });
ws = new WebSocket(`wss://${location.host}/ws/${room}`);
ws.onopen = ready;

function peer(id) {
  let pc = pcs.get(id);
  if (pc) return pc;
  pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: 'max-bundle' });
  pcs.set(id, pc);
  for (const track of stream.getTracks()) pc.addTrack(track, stream);
  pc.onicecandidate = (e) => e.candidate && send({ to: id, type: 'candidate', candidate: e.candidate });
  pc.ontrack = (e) => {
    let video = document.getElementById(`v-${id}`);
    if (!video) {
      video = document.createElement('video');
      video.id = `v-${id}`;
      video.autoplay = true;
      video.playsInline = true;
      video.muted = true;
      document.getElementById('tiles').append(video);
    }
    video.srcObject = e.streams[0];
  };
  return pc;
}

join.onclick = () => { join.disabled = true; api.state = 'joining'; send({ type: 'join' }); };
ws.onmessage = async (event) => {
  const m = JSON.parse(event.data);
  if (m.type === 'welcome') {
    self = m.id;
    api.state = 'in-call';
    for (const id of m.peers) {
      const pc = peer(id);
      await pc.setLocalDescription();
      send({ to: id, type: 'offer', sdp: pc.localDescription.sdp });
    }
  } else if (m.type === 'offer') {
    const pc = peer(m.from);
    await pc.setRemoteDescription({ type: 'offer', sdp: m.sdp });
    await pc.setLocalDescription();
    send({ to: m.from, type: 'answer', sdp: pc.localDescription.sdp });
  } else if (m.type === 'answer') {
    await pcs.get(m.from).setRemoteDescription({ type: 'answer', sdp: m.sdp });
  } else if (m.type === 'candidate') {
    await peer(m.from).addIceCandidate(m.candidate);
  }
};
</script>
</body></html>
"""


def bare_app() -> web.Application:
    rooms: dict[str, dict[str, web.WebSocketResponse]] = defaultdict(dict)

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        members = rooms[request.match_info["room"]]
        me = secrets.token_hex(6)
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    break
                data = json.loads(message.data)
                if data.get("type") == "join":
                    others = list(members)
                    members[me] = ws
                    await ws.send_str(json.dumps({"type": "welcome", "id": me, "peers": others}))
                elif data.get("to") in members:
                    await members[data["to"]].send_str(json.dumps({**data, "from": me}))
        finally:
            members.pop(me, None)
        return ws

    app = web.Application()
    app.router.add_get("/call", page)
    app.router.add_get("/ws/{room}", socket)
    return app


class BareServer:
    """The bare call's HTTPS server on a free loopback port, in this process's event loop."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        self._runner = web.AppRunner(bare_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._context)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"https://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def call_url(self) -> str:
        return f"{self.url}/call#{secrets.token_hex(8)}"


def tls_context(folder: Path) -> ssl.SSLContext:
    """A server context like `kijkmee serve`'s: its TLS policy and a fresh self-signed certificate."""
    cert, key, _created = ensure_dev_certificate(folder, dt.datetime.now(dt.UTC))
    return TlsPolicy().server_context(cert, key)
