"""Calls forced through our own relay (iceTransportPolicy 'relay') in Chromium, over UDP, TCP and TLS,
with encrypted-only relaying on; and proof that the relay only ever carried ciphertext."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect

from tests import stored
from tests.conftest import IN_CI
from tests.e2e.ca import Pki
from tests.e2e.conftest import ServeProcess, launch_chromium, start_serve, stop_serve
from tests.e2e.test_browser_call import assert_media_rising, join, wait_for_media_from, wait_state

pytestmark = pytest.mark.netns

# Keep only the relay URLs of one transport (udp, tcp or tls) from what the server hands out, so each
# test proves that one transport; the server's own answer is unchanged otherwise.
ONE_TRANSPORT = """
(() => {
  const want = %r;
  const keep = (url) => want === 'tls' ? url.startsWith('turns:') :
      url.startsWith('turn:') && url.endsWith('transport=' + want);
  const Original = window.RTCPeerConnection;
  window.RTCPeerConnection = function (config) {
    const servers = (config.iceServers || []).map(s => ({...s, urls: [].concat(s.urls).filter(keep)}));
    return new Original({...config, iceServers: servers});
  };
  window.RTCPeerConnection.prototype = Original.prototype;
})();
"""


@pytest.fixture(scope="module")
def relayed_serve(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[ServeProcess]:
    server = start_serve(
        tmp_path_factory.mktemp("relayed") / "data", "--ice-transport-policy", "relay",
        "--allow-peer", "127.0.0.1/32", "--cert-file", str(pki.cert_file), "--key-file", str(pki.key_file),
    )
    yield server
    stop_serve(server)


@pytest.fixture(scope="module")
def browser(playwright: Playwright, pki: Pki) -> Iterator[Browser]:
    chromium = launch_chromium(playwright, pki=pki)  # trusts the test CA: turns: and https are checked
    yield chromium
    chromium.close()


def make_link(server: ServeProcess) -> str:
    """A call link, made the way the home page makes one (sync: Playwright's sync API owns the loop)."""
    import concurrent.futures

    from tests.integration.sio_helpers import create_room

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        room = pool.submit(lambda: __import__("asyncio").run(create_room(server.url))).result()
    return f"{server.url}/r/{room}"


def open_people(browser: Browser, url: str, count: int, transport: str) -> list[Page]:
    pages = []
    for _ in range(count):
        context = browser.new_context(locale="en-GB")  # no ignore_https_errors: the CA is trusted
        context.add_init_script(ONE_TRANSPORT % transport)
        page = context.new_page()
        page.goto(url)
        pages.append(page)
    return pages


def close(pages: list[Page]) -> None:
    for page in pages:
        page.context.close()


RELAY_PROTOCOL_JS = """
async () => {
  const out = {};
  for (const [id, pc] of window.kijkmee.pcs) {
    const stats = await pc.getStats();
    const byId = new Map(); stats.forEach(r => byId.set(r.id, r));
    stats.forEach(r => {
      if (r.type === 'transport' && r.selectedCandidatePairId) {
        const pair = byId.get(r.selectedCandidatePairId);
        const local = byId.get(pair.localCandidateId), remote = byId.get(pair.remoteCandidateId);
        out[id] = {local: local.candidateType, remote: remote.candidateType, relayProtocol: local.relayProtocol,
                   url: local.url};
      }
    });
  }
  return out;
}
"""


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_three_way_call_through_the_relay(relayed_serve: ServeProcess, browser: Browser, transport: str) -> None:
    url = make_link(relayed_serve)
    pages = open_people(browser, url, 3, transport)
    try:
        for page in pages:
            join(page)
        for page in pages:
            wait_state(page, "in-call")
            stats = wait_for_media_from(page, 2, timeout=40)
            assert_media_rising(page, stats)
            routes: dict[str, Any] = page.evaluate(RELAY_PROTOCOL_JS)
            assert len(routes) == 2
            for route in routes.values():
                assert route["local"] == "relay", route
                assert route["relayProtocol"] == transport, route
                assert route["url"].startswith("turns:" if transport == "tls" else "turn:"), route
            # And the page says so on each of the others' tiles, in words a person understands.
            badges = page.locator(".tile[data-peer-id] .tile-route")
            expect(badges).to_have_count(2)
            for badge in badges.all():
                expect(badge).to_have_attribute("data-route", "relay", timeout=10_000)
                expect(badge).to_have_text("via relay, still encrypted")
        pages[0].click("#lang")
        dutch = pages[0].locator(".tile[data-peer-id] .tile-route").first
        expect(dutch).to_have_text("via relay, nog steeds versleuteld")
        # The browsers reported the relayed route with their set-up time (telemetry, no addresses).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            recent = stored.session_telemetry(relayed_serve.data_dir)[-3:]
            if len(recent) == 3 and all(route == "relay" for route, _, _ in recent):
                break
            time.sleep(0.1)
        assert [(route, isinstance(ms, int)) for route, ms, _ in recent] == [("relay", True)] * 3, recent
    finally:
        close(pages)


def test_the_relay_carries_only_ciphertext(relayed_serve: ServeProcess, browser: Browser, tmp_path: Path) -> None:
    """A marker sent over a data channel through the relay is in no packet on the wire."""
    if shutil.which("tcpdump") is None:
        (pytest.fail if IN_CI else pytest.skip)("tcpdump is not installed; make test installs it")
    marker = "KIJKMEE-PLAINTEXT-MARKER-5f0c2a"
    capture = tmp_path / "relay.pcap"
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "-U", "-s", "0", "-w", str(capture), "udp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pages = open_people(browser, make_link(relayed_serve), 2, "udp")
    try:
        time.sleep(1)  # let tcpdump start
        for page in pages:
            join(page)
        for page in pages:
            wait_state(page, "in-call")
            wait_for_media_from(page, 1, timeout=40)
        # Both sides open the same pre-negotiated data channel; the client renegotiates for it.
        open_channel = """marker => new Promise((resolve) => {
            const [pc] = window.kijkmee.pcs.values();
            const channel = pc.createDataChannel('marker', {negotiated: true, id: 7});
            window.__received = [];
            channel.onmessage = (e) => window.__received.push(e.data);
            channel.onopen = () => { for (let i = 0; i < 20; i++) channel.send(marker); resolve(true); };
        })"""
        for page in pages:
            page.evaluate(f"() => {{ ({open_channel})({marker!r}); }}")
        for page in pages:
            page.wait_for_function("n => window.__received && window.__received.length >= n", arg=20, timeout=30_000)
            assert page.evaluate("() => window.__received[0]") == marker
        time.sleep(1)
    finally:
        close(pages)
        dump.send_signal(signal.SIGINT)
        dump.wait(timeout=10)
    data = capture.read_bytes()
    assert len(data) > 200_000, "the capture saw too little traffic to prove anything"
    assert marker.encode() not in data
    assert marker.encode("utf-16-le") not in data


def test_home_page_is_served_with_a_trusted_certificate(relayed_serve: ServeProcess, browser: Browser) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(relayed_serve.url + "/")
        expect(page.locator("#start-call")).to_be_visible()
    finally:
        context.close()
