"""Browser and WebRTC fixtures. These tests run only inside a network namespace that has nothing but
loopback (`make test` makes one), because Chromium and aiortc gather and try every interface."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import IN_CI, in_private_netns

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-loopback-in-peer-connection",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(autouse=True, scope="module")
def _only_in_private_netns() -> None:
    if in_private_netns():
        return
    reason = "browser/media test: run inside a network namespace with only loopback (`make test` does)"
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass
class ServeProcess:
    url: str
    data_dir: Path
    log_file: Path
    process: subprocess.Popen[str]

    def logs(self) -> str:
        return self.log_file.read_text(encoding="utf-8")


def start_serve(data_dir: Path, *extra: str) -> ServeProcess:
    """`kijkmee serve` as a user starts it, on a port the OS picks; the URL is read from what it prints."""
    log_file = data_dir.parent / f"{data_dir.name}-stderr.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "kijkmee", "serve", "--port", "0", "--turn-port", "0", "--turns-port", "0",
         "--data-dir", str(data_dir), *extra],
        stdout=subprocess.PIPE, stderr=log_file.open("w"), text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        match = re.search(r"Open (https://\S+) in your browser", line)
        if match:
            return ServeProcess(match.group(1), data_dir, log_file, process)
    process.kill()
    raise RuntimeError(f"kijkmee serve did not start: {log_file.read_text()}")


def stop_serve(server: ServeProcess) -> None:
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        raise


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    server = start_serve(tmp_path_factory.mktemp("serve") / "data")
    yield server
    stop_serve(server)


# JavaScript run in a page: per peer, what its RTCPeerConnection has received and over which route.
PEER_STATS_JS = """
async () => {
  const out = {};
  for (const [id, pc] of window.kijkmee.pcs) {
    const stats = await pc.getStats();
    const peer = {frames: 0, audioSamples: 0, audioEnergy: 0, connection: pc.connectionState, route: null};
    const byId = new Map();
    stats.forEach(r => byId.set(r.id, r));
    stats.forEach(r => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') peer.frames += r.framesDecoded || 0;
      if (r.type === 'inbound-rtp' && r.kind === 'audio') {
        peer.audioSamples += r.totalSamplesReceived || 0;
        peer.audioEnergy += r.totalAudioEnergy || 0;
      }
      if (r.type === 'transport' && r.selectedCandidatePairId) {
        const pair = byId.get(r.selectedCandidatePairId);
        const local = pair && byId.get(pair.localCandidateId);
        const remote = pair && byId.get(pair.remoteCandidateId);
        if (local && remote) peer.route = {local: local.candidateType, remote: remote.candidateType,
                                           localAddress: local.address, remoteAddress: remote.address,
                                           protocol: local.protocol, dtls: r.dtlsState};
      }
    });
    out[id] = peer;
  }
  return out;
}
"""
