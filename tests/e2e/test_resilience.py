"""A call survives a cut network path and a page reload, without anyone clicking.

One participant's Chromium runs in a network namespace of its own (made here), joined to the test's
namespace by a veth pair that carries the call's media. Its connection to the server goes another way:
inside its namespace `127.0.0.1:<server port>` is a socat that passes the bytes over a Unix socket
(Unix sockets cross namespaces) to a small bridge in this test, which connects to the real server. So
the test can cut the media path alone (a blackhole route: only an ICE restart over the still-working
signaling repairs it) or media and signaling together (the person is cut off; the page reconnects and
takes its seat back with its rejoin token: same peer id, same session row). A reload does the same
through the token kept in sessionStorage.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect

from tests import stored
from tests.conftest import IN_CI
from tests.e2e.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, ServeProcess, start_serve, stop_serve
from tests.e2e.test_browser_call import join, peer_stats, wait_for_media_from, wait_state
from tests.e2e.test_relay_call import make_link

pytestmark = pytest.mark.netns

HOST_SIDE, AWAY_SIDE = "kjm-host", "kjm-away"
MEDIA_IP, AWAY_IP = "10.213.0.1", "10.213.0.2"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def media_link(netns: str, state: str) -> None:
    """Cut ("down") or restore ("up") the media path inside the away namespace with a blackhole route
    to the others' address: packets vanish as on a dead network. (Taking the interface down would be a
    network change, on which Chromium closes every socket at once and the page reconnects at once.)"""
    ip("-n", netns, "route", "add" if state == "down" else "del", "blackhole", f"{MEDIA_IP}/32")


@pytest.fixture(scope="module")
def away_netns() -> Iterator[str]:
    """A namespace of our own for the person whose network we cut, joined to ours by a veth pair."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("socat") is None:
        (pytest.fail if IN_CI else pytest.skip)("needs root, iproute2 and socat (make test installs them)")
    name = f"kijkmee-away-{os.getpid()}"
    ip("netns", "add", name)
    try:
        ip("-n", name, "link", "set", "lo", "up")
        ip("link", "add", HOST_SIDE, "type", "veth", "peer", "name", AWAY_SIDE)
        ip("link", "set", AWAY_SIDE, "netns", name)
        ip("addr", "add", f"{MEDIA_IP}/24", "dev", HOST_SIDE)
        ip("link", "set", HOST_SIDE, "up")
        ip("-n", name, "addr", "add", f"{AWAY_IP}/24", "dev", AWAY_SIDE)
        ip("-n", name, "link", "set", AWAY_SIDE, "up")
        yield name
    finally:
        subprocess.run(["ip", "link", "del", HOST_SIDE], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


class SignalingBridge:
    """Unix socket → the server's TCP port, with a switch that cuts it like a dead network: while cut,
    bytes are swallowed both ways and new connections get nowhere."""

    def __init__(self, path: Path, port: int) -> None:
        self.path, self.port = path, port
        self.cut = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        self.server = await asyncio.start_unix_server(self._connection, str(self.path))

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut.is_set():
            await asyncio.sleep(3600)  # a connection attempt into the void
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if not self.cut.is_set():
                        dst.write(data)
                        await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def _stop(self) -> None:
        self.server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory, away_netns: str) -> Iterator[ServeProcess]:
    server = start_serve(tmp_path_factory.mktemp("resilience") / "data", "--seat-grace-seconds", "60")
    yield server
    stop_serve(server)


@pytest.fixture(scope="module")
def bridge(serve: ServeProcess, away_netns: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SignalingBridge]:
    """`127.0.0.1:<server port>` inside the away namespace leads to the server, through a cuttable bridge."""
    port = int(serve.url.rsplit(":", 1)[1])
    path = tmp_path_factory.mktemp("bridge") / "signaling.sock"
    bridge = SignalingBridge(path, port)
    socat = subprocess.Popen(["ip", "netns", "exec", away_netns, "socat",
                              f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr", f"UNIX-CONNECT:{path}"])
    deadline = time.monotonic() + 10
    while subprocess.run(["ip", "netns", "exec", away_netns, "bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}"],
                         capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "socat did not start in the away namespace"
        time.sleep(0.1)
    yield bridge
    socat.terminate()
    socat.wait(5)
    bridge.close()


@pytest.fixture(scope="module")
def here(browser: Browser) -> Browser:
    """The browser of the two people whose network stays up (the module's browser, in the test's own
    namespace)."""
    return browser


@pytest.fixture(scope="module")
def away(playwright: Playwright, away_netns: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """The cut-off person's browser, started inside the away namespace."""
    wrapper = tmp_path_factory.mktemp("away") / "chromium-away"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {away_netns} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    args = CHROMIUM_ARGS
    browser = playwright.chromium.launch(executable_path=str(wrapper), args=args)
    yield browser
    browser.close()


# iOS Safari's autoplay rule: a media element may play with sound only from a user's tap (transient
# activation); muted playback is always allowed.
# (Chromium carries a user activation over a same-origin reload, so "a tap" is a tap on this document.)
TAP_TO_PLAY = """
const play = HTMLMediaElement.prototype.play;
let tappedAt = -Infinity;
for (const type of ['pointerdown', 'keydown']) addEventListener(type, () => { tappedAt = performance.now(); }, true);
HTMLMediaElement.prototype.play = function () {
  if (!this.muted && !(navigator.userActivation.isActive && performance.now() - tappedAt < 5000)) {
    return Promise.reject(new DOMException('play() needs a tap', 'NotAllowedError'));
  }
  return play.call(this);
};
"""

def open_page(browser: Browser, url: str) -> Page:
    context = browser.new_context(ignore_https_errors=True, locale="en-GB")
    page = context.new_page()
    page.goto(url)
    return page


def tiles(page: Page) -> int:
    return page.locator("#tiles .tile").count()


def self_id(page: Page) -> str:
    value = page.evaluate("window.kijkmee.selfId")
    assert isinstance(value, str) and value
    return value


def wait_until_flowing_again(page: Page, timeout: float = 45.0) -> None:
    """Both others deliver new video and audio frames to `page` (not just what arrived before)."""
    before = wait_for_media_from(page, 2, timeout=timeout)
    # After an outage the video needs a new key frame and the bandwidth estimate climbs back: allow it
    # a while, but every peer's video and audio must move on.
    deadline = time.monotonic() + 20
    while True:
        time.sleep(0.5)
        now = peer_stats(page)
        stalled = {peer: (old, now.get(peer)) for peer, old in before.items()
                   if peer not in now or now[peer]["frames"] <= old["frames"]
                   or now[peer]["audioSamples"] <= old["audioSamples"]}
        if not stalled:
            return
        assert time.monotonic() < deadline, f"media stalled: {stalled}"


@pytest.fixture
def call(serve: ServeProcess, bridge: SignalingBridge, here: Browser, away: Browser
         ) -> Iterator[tuple[list[Page], Page]]:
    url = make_link(serve)
    staying = [open_page(here, url), open_page(here, url)]
    leaving = open_page(away, url)
    pages = [*staying, leaving]
    for page in pages:
        join(page)
    for page in pages:
        wait_state(page, "in-call")
        wait_until_flowing_again(page, timeout=30)
    yield staying, leaving
    for page in pages:
        page.context.close()


def test_a_cut_path_heals_by_itself_and_the_same_seat_is_taken_back(
    serve: ServeProcess, away_netns: str, bridge: SignalingBridge, call: tuple[list[Page], Page]
) -> None:
    staying, leaving = call
    before_id = self_id(leaving)
    rows_before = len(stored.session_rows(serve.data_dir))
    bridge.cut.set()
    media_link(away_netns, "down")
    try:
        # The others see the person as reconnecting (seat held), not gone; the person's own page knows
        # it lost the server and keeps the call view up.
        for page in staying:
            expect(page.locator(f'.tile[data-peer-id="{before_id}"]')).to_have_attribute(
                "data-connection", "away", timeout=30_000)
        wait_state(leaving, "joining", timeout=30_000)
        expect(leaving.locator("#message")).to_have_attribute("data-code", "server-unreachable")
    finally:
        bridge.cut.clear()
        media_link(away_netns, "up")
    for page in [*staying, leaving]:
        wait_state(page, "in-call", timeout=45_000)
    for page in [*staying, leaving]:
        wait_until_flowing_again(page)
        assert tiles(page) == 3
    assert self_id(leaving) == before_id  # the same seat, not a new participant
    assert not leaving.locator("#message").is_visible()
    # No new session row: the seat, and its row, were taken back.
    assert len(stored.session_rows(serve.data_dir)) == rows_before


REMOTE_UFRAGS_JS = """
() => Object.fromEntries([...window.kijkmee.pcs].map(([id, pc]) =>
  [id, (pc.remoteDescription?.sdp.match(/a=ice-ufrag:(\\S+)/) || [])[1] || null]))
"""


def test_a_media_path_that_dies_while_signaling_stays_up_is_restored_by_an_ice_restart(
    serve: ServeProcess, away_netns: str, call: tuple[list[Page], Page]
) -> None:
    staying, leaving = call
    before_id = self_id(leaving)
    ufrags = {page: page.evaluate(REMOTE_UFRAGS_JS) for page in [*staying, leaving]}
    # Cut the media link only: the connections to this person go 'disconnected' while signaling stays
    # up, and only new ICE credentials and checks (a restart, negotiated over signaling) bring them back.
    media_link(away_netns, "down")
    try:
        for page in staying:
            expect(page.locator(f'.tile[data-peer-id="{before_id}"]')).to_have_attribute(
                "data-connection", "disconnected", timeout=30_000)
        time.sleep(4)  # past DISCONNECTED_RESTART_MS: restarts are under way while the path is still dead
        assert leaving.evaluate("window.kijkmee.state") == "in-call"  # signaling never noticed
    finally:
        media_link(away_netns, "up")
    for page in [*staying, leaving]:
        page.wait_for_function("() => [...window.kijkmee.pcs.values()].every(pc => pc.connectionState === 'connected')",
                               timeout=45_000)
        wait_until_flowing_again(page)
        assert page.evaluate("window.kijkmee.state") == "in-call"
    assert self_id(leaving) == before_id
    # New ICE credentials on every connection to and from the cut-off person: ICE was restarted.
    others = {self_id(page) for page in staying}
    assert {peer: ufrag for peer, ufrag in leaving.evaluate(REMOTE_UFRAGS_JS).items()
            if ufrags[leaving][peer] == ufrag} == {}, "the cut-off person's connections were not restarted"
    for page in staying:
        now = page.evaluate(REMOTE_UFRAGS_JS)
        assert now[before_id] != ufrags[page][before_id]
    assert set(leaving.evaluate(REMOTE_UFRAGS_JS)) == others


def test_a_reload_rejoins_the_same_seat_and_one_tap_brings_the_sound(
    serve: ServeProcess, call: tuple[list[Page], Page]
) -> None:
    staying, leaving = call
    before_id = self_id(leaving)
    rows_before = len(stored.session_rows(serve.data_dir))
    # iOS Safari's rule, enforced in this page from the reload on: a play() with sound that no tap
    # started is refused (Chromium's own policy lets a page that captures the camera play anyway).
    leaving.context.add_init_script(TAP_TO_PLAY)
    leaving.reload()
    # Straight back into the call, no click on "Join".
    wait_state(leaving, "in-call", timeout=30_000)
    assert self_id(leaving) == before_id
    for page in [*staying, leaving]:
        wait_until_flowing_again(page)
        assert tiles(page) == 3
    assert len(stats_rows := stored.session_rows(serve.data_dir)) == rows_before, stats_rows
    # Nobody tapped the reloaded page, so sound was refused: the others' pictures play muted, and one tap
    # on the offered button turns the sound on for all of them.
    sound = leaving.locator("#sound")
    expect(sound).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    leaving.screenshot(path=str(ARTIFACTS / "rejoined-tap-for-sound.png"))
    remote_videos = "[...document.querySelectorAll('.tile[data-peer-id] video')]"
    assert leaving.evaluate(f"{remote_videos}.every(v => v.muted && !v.paused)")  # the picture runs
    sound.click()
    expect(sound).to_be_hidden()
    leaving.wait_for_function(f"() => {remote_videos}.every(v => !v.muted && !v.paused)")
    stats = peer_stats(leaving)
    assert len(stats) == 2


def test_leaving_forgets_the_token_so_a_reload_does_not_pull_you_back_in(
    serve: ServeProcess, call: tuple[list[Page], Page]
) -> None:
    _, leaving = call
    leaving.click("#leave")
    wait_state(leaving, "left")
    leaving.reload()
    wait_state(leaving, "prejoin")
    time.sleep(1.0)
    assert leaving.evaluate("window.kijkmee.state") == "prejoin"
    assert leaving.evaluate("Object.keys(sessionStorage).filter(k => k.startsWith('kijkmee.rejoin.'))") == []
