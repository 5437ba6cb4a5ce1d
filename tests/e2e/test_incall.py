"""In-call controls and what the call shows, in a real three-person call in Chromium (fake devices):
the camera really off and back, screen sharing (also from someone without a camera), switching the
microphone, the speaking ring, connection quality, the route badge, and the verification code, equal in
an honest call and different when a man in the middle swaps keys in signaling."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import aioice.ice
import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, Playwright, expect

from tests.e2e.conftest import ARTIFACTS, ServeProcess, launch_chromium, publish_screenshot
from tests.e2e.mitm import Mitm, fingerprint, verification_code
from tests.e2e.test_browser_call import join, start_call, wait_state

pytestmark = pytest.mark.netns


# Carla has a microphone but no camera: her getUserMedia never returns video.
NO_CAMERA = """
(() => {
  const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = (constraints = {}) =>
    constraints.audio ? original({audio: constraints.audio})
                      : Promise.reject(new DOMException('test', 'NotFoundError'));
})();
"""

# Per peer: what this page receives from it (frames and their size, audio) and what it sends to it.
INBOUND_JS = """
async () => {
  const out = {};
  for (const [id, pc] of window.kijkmee.pcs) {
    const peer = {frames: 0, width: 0, height: 0, audioSamples: 0, audioEnergy: 0, connection: pc.connectionState,
                  sentVideo: pc.getSenders().filter(s => s.track && s.track.kind === 'video').map(s => s.track.id),
                  sentAudio: pc.getSenders().filter(s => s.track && s.track.kind === 'audio').map(s => s.track.id)};
    (await pc.getStats()).forEach(r => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') {
        peer.frames += r.framesDecoded || 0;
        peer.width = r.frameWidth || peer.width;
        peer.height = r.frameHeight || peer.height;
      }
      if (r.type === 'inbound-rtp' && r.kind === 'audio') {
        peer.audioSamples += r.totalSamplesReceived || 0;
        peer.audioEnergy += r.totalAudioEnergy || 0;
      }
    });
    out[id] = peer;
  }
  return out;
}
"""

# What the self tile shows (the local stream = what we send).
LOCAL_JS = """
() => {
  const stream = document.querySelector('.tile.self video').srcObject;
  return {
    video: stream.getVideoTracks().map(t => ({id: t.id, label: t.label, state: t.readyState,
                                              deviceId: t.getSettings().deviceId})),
    audio: stream.getAudioTracks().map(t => ({id: t.id, label: t.label, state: t.readyState, enabled: t.enabled})),
  };
}
"""

# The DTLS fingerprints each page's connection negotiated, from its SDP: (ours, theirs) per peer.
FINGERPRINTS_JS = """
() => Object.fromEntries([...window.kijkmee.pcs].map(
  ([id, pc]) => [id, [pc.localDescription.sdp, pc.remoteDescription.sdp]]))
"""


@dataclass
class Person:
    page: Page
    id: str

    def tile(self, other: Person) -> Locator:
        return self.page.locator(f'.tile[data-peer-id="{other.id}"]')

    def inbound(self) -> dict[str, Any]:
        result: dict[str, Any] = self.page.evaluate(INBOUND_JS)
        return result

    def local(self) -> dict[str, Any]:
        result: dict[str, Any] = self.page.evaluate(LOCAL_JS)
        return result

    def sdp_versions(self) -> dict[str, list[str]]:
        result: dict[str, list[str]] = self.page.evaluate(SDP_VERSIONS_JS)
        return result


@dataclass
class Call:
    anna: Person
    bram: Person
    carla: Person  # no camera

    @property
    def everyone(self) -> list[Person]:
        return [self.anna, self.bram, self.carla]


# The SDP versions (o= lines) of every connection's descriptions: they change only when the connection
# is renegotiated, so equal snapshots before and after mean "no offer/answer was needed".
SDP_VERSIONS_JS = """
() => Object.fromEntries([...window.kijkmee.pcs].map(([id, pc]) => [id, [
  pc.localDescription.sdp.match(/^o=.*$/m)[0], pc.remoteDescription.sdp.match(/^o=.*$/m)[0], pc.signalingState]]))
"""

# Three fake cameras, for switching cameras during the call. Not the second: Chromium's fake_device_1
# plays in a <video> but its frames never reach the encoder (seen in 156: 0 frames encoded after
# replaceTrack, with or without our code), while fake_device_2 behaves like fake_device_0.
@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = launch_chromium(playwright, drop_args=["--use-fake-device-for-media-stream"],
                               extra_args=["--use-fake-device-for-media-stream=device-count=3"])
    yield chromium
    chromium.close()


def new_page(browser: Browser, contexts: list[BrowserContext], locale: str = "en-GB", init: str | None = None) -> Page:
    context = browser.new_context(ignore_https_errors=True, locale=locale, viewport={"width": 1280, "height": 800})
    contexts.append(context)
    if init:
        context.add_init_script(init)
    return context.new_page()


def until(check: Any, what: str, timeout: float = 15.0) -> Any:
    """Poll `check()` until it returns something truthy (Playwright calls inside keep pages serviced)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


def frames_from(viewer: Person, sender: Person) -> int:
    return int(viewer.inbound()[sender.id]["frames"])


def frames_rising(viewers: Iterable[Person], sender: Person, seconds: float = 1.0) -> list[bool]:
    """For each viewer: did new frames from `sender` get decoded during `seconds`?"""
    viewers = list(viewers)
    before = [frames_from(viewer, sender) for viewer in viewers]
    viewers[0].page.wait_for_timeout(seconds * 1000)
    return [frames_from(viewer, sender) > old for viewer, old in zip(viewers, before, strict=True)]


# The fake screen is 1280x720 and the fake camera 960x540. The encoder may send the camera smaller
# (bandwidth, a busy CPU) but never larger; a screen (contentHint 'detail') keeps its resolution.
def shows_screen(viewer: Person, sender: Person) -> bool:
    return bool(viewer.inbound()[sender.id]["width"] == 1280)


def shows_camera(viewer: Person, sender: Person) -> bool:
    return bool(0 < viewer.inbound()[sender.id]["width"] <= 960)


@pytest.fixture(scope="module")
def call(serve: ServeProcess, browser: Browser) -> Iterator[Call]:
    contexts: list[BrowserContext] = []
    try:
        anna_page = new_page(browser, contexts)
        url = start_call(anna_page, serve.url)
        anna_page.goto(url)
        bram_page = new_page(browser, contexts, locale="nl-NL")
        bram_page.goto(url)
        carla_page = new_page(browser, contexts, init=NO_CAMERA)
        carla_page.goto(url)
        for page, name in ((anna_page, "Anna"), (bram_page, "Bram"), (carla_page, "Carla")):
            join(page, name)
            wait_state(page, "in-call")
        anna, bram, carla = (Person(p, p.evaluate("window.kijkmee.selfId")) for p in (anna_page, bram_page, carla_page))
        people = Call(anna, bram, carla)
        for viewer in people.everyone:
            for sender in people.everyone:
                if sender is viewer:
                    continue
                stats = until(lambda v=viewer, s=sender: (
                    (st := v.inbound().get(s.id)) and st["audioSamples"] > 0 and (st["frames"] > 0 or s is carla) and st
                ), f"media from {sender.id} at {viewer.id}", timeout=25)
                assert stats["connection"] == "connected"
        expect(carla.page.locator(".tile.self")).to_have_class(re.compile(r"\bno-video\b"))
        yield people
    finally:
        for context in contexts:
            context.close()


# ------------------------------------------------------------------ man in the middle (first: no other call runs)

def test_verification_codes_differ_through_a_man_in_the_middle(
    serve: ServeProcess, browser: Browser, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aioice skips 127.0.0.1 when gathering; in a loopback-only namespace that is the only address.
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else [])
    mitm = Mitm()
    contexts: list[BrowserContext] = []
    try:
        alice_page = new_page(browser, contexts)
        url = start_call(alice_page, serve.url)
        alice_page.goto(url)
        join(alice_page, "Alice")
        wait_state(alice_page, "in-call")
        bob_page = new_page(browser, contexts)
        bob_page.context.route_web_socket(re.compile(r"/socket\.io/"), mitm.route_b)
        bob_page.goto(url)
        join(bob_page, "Bob")
        wait_state(bob_page, "in-call")
        alice, bob = (Person(p, p.evaluate("window.kijkmee.selfId")) for p in (alice_page, bob_page))

        # Both calls come up and carry media, decrypted and re-encrypted in the middle.
        for viewer, other in ((alice, bob), (bob, alice)):
            until(lambda v=viewer, o=other: (s := v.inbound().get(o.id)) and s["connection"] == "connected"
                  and s["frames"] > 0 and s["audioSamples"] > 0, f"relayed media at {viewer.id}", timeout=30)
            assert frames_rising([viewer], other) == [True]
        assert mitm.a_id == alice.id and mitm.b_offer_sdp and mitm.a_answer_sdp
        assert mitm.unexpected == []

        alice_code, bob_code = reveal_code(alice, bob), reveal_code(bob, alice)
        assert alice_code != bob_code
        # Each saw the attacker's certificate, and the code says so: it is the code of their own
        # certificate with the attacker's, not with the other person's.
        alice_cert, bob_cert = fingerprint(mitm.a_answer_sdp), fingerprint(mitm.b_offer_sdp)
        to_alice, to_bob = fingerprint(mitm.to_a.localDescription.sdp), fingerprint(mitm.to_b.localDescription.sdp)
        assert alice_code == verification_code(alice_cert, to_alice)
        assert bob_code == verification_code(bob_cert, to_bob)
        assert verification_code(alice_cert, bob_cert) not in (alice_code, bob_code)
    finally:
        for context in contexts:
            context.close()
        mitm.close()


# -------------------------------------------------------------------------------------- badges

def test_route_badge_quality_and_layout_on_desktop_and_a_phone(call: Call) -> None:
    for viewer in call.everyone:
        for other in call.everyone:
            if other is viewer:
                continue
            tile = viewer.tile(other)
            route = tile.locator(".tile-route")
            expect(route).to_have_attribute("data-route", "direct", timeout=10_000)
            expect(route).to_have_text("direct")  # the same word in Dutch (Bram)
            quality = tile.locator(".tile-quality")
            expect(quality).to_have_attribute("data-quality", "good", timeout=10_000)
    # The quality is there for screen readers as text, in the page's language.
    expect(call.anna.tile(call.bram).locator(".tile-quality")).to_have_attribute("aria-label", "Connection: good")
    expect(call.bram.tile(call.anna).locator(".tile-quality")).to_have_attribute("aria-label", "Verbinding: goed")

    ARTIFACTS.mkdir(exist_ok=True)
    page = call.anna.page
    page.screenshot(path=str(ARTIFACTS / "call-badges-desktop.png"))
    publish_screenshot(ARTIFACTS / "call-badges-desktop.png")

    page.set_viewport_size({"width": 360, "height": 780})
    try:
        # Nothing sticks out sideways; every tile, badge and control fits in the 360 px.
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        for box in page.locator(".tile, .tile-route, .tile-quality, .tile-verify, .controls button:visible").all():
            rect = box.bounding_box()
            assert rect is not None and rect["x"] >= 0 and rect["x"] + rect["width"] <= 360, rect
        for other in (call.bram, call.carla):
            expect(call.anna.tile(other).locator(".tile-route")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "call-badges-phone.png"), full_page=True)
        publish_screenshot(ARTIFACTS / "call-badges-phone.png")
    finally:
        page.set_viewport_size({"width": 1280, "height": 800})


def test_quality_classifier(call: Call) -> None:
    result = call.anna.page.evaluate("""async () => {
        const {classifyQuality} = await import('/static/js/callstats.js');
        return [
          classifyQuality({rttMs: 2, lossFraction: 0, jitterMs: 1}),
          classifyQuality({rttMs: 350, lossFraction: 0, jitterMs: 5}),
          classifyQuality({rttMs: 40, lossFraction: 0.04, jitterMs: 5}),
          classifyQuality({rttMs: 40, lossFraction: 0.001, jitterMs: 45}),
          classifyQuality({rttMs: 800, lossFraction: 0, jitterMs: 5}),
          classifyQuality({rttMs: 40, lossFraction: 0.15, jitterMs: 5}),
          classifyQuality({rttMs: 40, lossFraction: 0, jitterMs: 120}),
          classifyQuality({rttMs: 350, lossFraction: 0.1}),
          classifyQuality({rttMs: null, lossFraction: null, jitterMs: null}),
          classifyQuality({jitterMs: 10}),
        ];
    }""")
    assert result == ["good", "fair", "fair", "fair", "poor", "poor", "poor", "poor", None, "good"]


# -------------------------------------------------------------------------------------- camera

def test_camera_off_releases_the_camera_and_on_brings_it_back(call: Call) -> None:
    anna, others = call.anna, (call.bram, call.carla)
    camera = anna.local()["video"]
    assert len(camera) == 1 and camera[0]["state"] == "live"
    anna.page.evaluate("() => { window.__camera = document.querySelector('.tile.self video').srcObject"
                       ".getVideoTracks()[0]; }")
    versions = anna.sdp_versions()

    anna.page.click("#camera")
    expect(anna.page.locator("#camera")).to_have_attribute("aria-pressed", "true")
    # Released: the track is stopped (the camera light goes out) and no connection sends video.
    anna.page.wait_for_function("() => window.__camera.readyState === 'ended'")
    assert anna.local()["video"] == []
    until(lambda: all(not p["sentVideo"] for p in anna.inbound().values()), "no video senders with a track")
    expect(anna.page.locator(".tile.self")).to_have_class(re.compile(r"\bno-video\b"))
    for viewer in others:
        tile = viewer.tile(anna)
        expect(tile).to_have_attribute("data-video", "stalled", timeout=10_000)
        expect(tile.locator(".tile-placeholder")).to_be_visible()
    assert frames_rising(others, anna, 1.5) == [False, False], "frames kept arriving with the camera off"

    anna.page.click("#camera")
    expect(anna.page.locator("#camera")).to_have_attribute("aria-pressed", "false")
    fresh = until(lambda: [t for t in anna.local()["video"] if t["state"] == "live"], "a live camera track")
    assert fresh[0]["id"] != anna.page.evaluate("window.__camera.id")
    until(lambda: all(p["sentVideo"] == [fresh[0]["id"]] for p in anna.inbound().values()), "senders on the new camera")
    for viewer in others:
        expect(viewer.tile(anna)).to_have_attribute("data-video", "flowing", timeout=10_000)
        expect(viewer.tile(anna).locator(".tile-placeholder")).to_be_hidden()
    assert frames_rising(others, anna) == [True, True]
    assert anna.sdp_versions() == versions  # off and on again without renegotiating


def test_switching_the_camera_mid_call(call: Call) -> None:
    anna, others = call.anna, (call.bram, call.carla)
    page = anna.page
    versions = anna.sdp_versions()
    old = anna.local()["video"][0]
    assert old["label"] == "fake_device_0"
    page.evaluate("() => { window.__old = document.querySelector('.tile.self video').srcObject.getVideoTracks()[0]; }")
    page.click("#call-devices")
    select = page.locator("#call-camera-select")
    expect(select).to_be_visible()
    expect(select.locator("option")).to_have_text(["fake_device_0", "fake_device_1", "fake_device_2"])
    expect(select).to_have_value(old["deviceId"])
    select.select_option(label="fake_device_2")
    new = until(lambda: [t for t in anna.local()["video"] if t["label"] == "fake_device_2" and t["state"] == "live"],
                "the other camera")[0]
    until(lambda: all(p["sentVideo"] == [new["id"]] for p in anna.inbound().values()), "senders on the other camera")
    page.wait_for_function("() => window.__old.readyState === 'ended'")  # the first camera is released
    until(lambda: frames_rising(others, anna) == [True, True], "frames from the other camera")
    assert anna.sdp_versions() == versions
    page.keyboard.press("Escape")
    expect(page.locator("#call-device-menu")).to_be_hidden()


# --------------------------------------------------------------------------------- screen share

def test_screen_sharing_replaces_the_camera_and_stopping_brings_it_back(call: Call) -> None:
    anna, others = call.anna, (call.bram, call.carla)
    for viewer in others:
        until(lambda v=viewer: shows_camera(v, anna), f"the camera at {viewer.id}")
    share = anna.page.locator("#share-screen")
    expect(share).to_have_attribute("aria-pressed", "false")
    versions = anna.sdp_versions()
    share.click()
    expect(share).to_have_attribute("aria-pressed", "true")
    expect(anna.page.locator(".tile.self")).to_have_class(re.compile(r"\bsharing\b"))
    expect(anna.page.locator(".tile.self .tile-sharing")).to_be_visible()
    assert anna.local()["video"][0]["label"].startswith("screen")  # the self tile shows what is shared
    for viewer in others:
        until(lambda v=viewer: shows_screen(v, anna), f"the screen at {viewer.id}")
    assert frames_rising(others, anna) == [True, True]

    # The browser's own "Stop sharing" ends the track; the page must then go back to the camera by itself.
    anna.page.evaluate("""() => {
        const track = document.querySelector('.tile.self video').srcObject.getVideoTracks()[0];
        track.stop();
        track.dispatchEvent(new Event('ended'));
    }""")
    expect(share).to_have_attribute("aria-pressed", "false")
    expect(anna.page.locator(".tile.self")).not_to_have_class(re.compile(r"\bsharing\b"))
    until(lambda: [t for t in anna.local()["video"] if t["state"] == "live" and not t["label"].startswith("screen")],
          "the camera back")
    for viewer in others:
        until(lambda v=viewer: shows_camera(v, anna), f"the camera again at {viewer.id}")
    assert frames_rising(others, anna) == [True, True]

    # Sharing again, and stopping with the button.
    share.click()
    for viewer in others:
        until(lambda v=viewer: shows_screen(v, anna), f"the screen again at {viewer.id}")
    share.click()
    expect(share).to_have_attribute("aria-pressed", "false")
    for viewer in others:
        until(lambda v=viewer: shows_camera(v, anna), f"the camera after the button at {viewer.id}")
    assert anna.sdp_versions() == versions  # every switch was a replaceTrack on the existing senders


def test_someone_without_a_camera_can_share_the_screen(call: Call) -> None:
    """Carla joined without a camera, so she sent no video at all: sharing has to add it (renegotiation)."""
    carla, others = call.carla, (call.anna, call.bram)
    for viewer in others:
        assert frames_from(viewer, carla) == 0
        expect(viewer.tile(carla)).to_have_class(re.compile(r"\bno-video\b"))
    expect(carla.page.locator("#camera")).to_be_disabled()
    versions = carla.sdp_versions()
    share = carla.page.locator("#share-screen")
    share.click()
    expect(share).to_have_attribute("aria-pressed", "true")
    expect(carla.page.locator(".tile.self")).not_to_have_class(re.compile(r"\bno-video\b"))
    for viewer in others:
        until(lambda v=viewer: shows_screen(v, carla), f"Carla's screen at {viewer.id}")
        expect(viewer.tile(carla)).to_have_attribute("data-video", "flowing", timeout=10_000)
        expect(viewer.tile(carla).locator("video")).to_be_visible()
    assert frames_rising(others, carla) == [True, True]
    renegotiated = carla.sdp_versions()
    assert all(renegotiated[peer][:2] != versions[peer][:2] for peer in versions)  # she had no video sender
    share.click()
    expect(share).to_have_attribute("aria-pressed", "false")
    expect(carla.page.locator(".tile.self")).to_have_class(re.compile(r"\bno-video\b"))
    for viewer in others:
        expect(viewer.tile(carla)).to_have_attribute("data-video", "stalled", timeout=10_000)
    # Her audio never stopped.
    before = [viewer.inbound()[carla.id]["audioSamples"] for viewer in others]
    for viewer, samples in zip(others, before, strict=True):
        until(lambda v=viewer, b=samples: v.inbound()[carla.id]["audioSamples"] > b, "Carla's audio")


# --------------------------------------------------------------------------------- microphone

def test_switching_the_microphone_mid_call(call: Call) -> None:
    bram, others = call.bram, (call.anna, call.carla)
    page = bram.page
    old = bram.local()["audio"][0]
    versions = bram.sdp_versions()
    page.click("#call-devices")
    expect(page.locator("#call-devices")).to_have_attribute("aria-expanded", "true")
    select = page.locator("#call-mic-select")
    expect(select).to_be_visible()
    expect(select).to_be_focused()  # keyboard users land in the menu
    labels = select.locator("option").all_inner_texts()
    assert "Fake Audio Input 1" in labels, labels
    select.select_option(label="Fake Audio Input 1")
    new = until(lambda: [t for t in bram.local()["audio"]
                         if t["label"] == "Fake Audio Input 1" and t["state"] == "live"], "the new microphone")[0]
    assert new["id"] != old["id"]
    until(lambda: all(p["sentAudio"] == [new["id"]] for p in bram.inbound().values()), "senders on the new microphone")
    assert page.evaluate("""id => [...window.kijkmee.pcs.values()].every(pc =>
        pc.getSenders().every(s => !s.track || s.track.id !== id))""", old["id"])
    # The others keep hearing Bram: samples and (the fake microphone beeps) energy keep coming.
    before = [viewer.inbound()[bram.id] for viewer in others]
    page.wait_for_timeout(1500)
    for viewer, old_stats in zip(others, before, strict=True):
        after = viewer.inbound()[bram.id]
        assert after["audioSamples"] > old_stats["audioSamples"]
        assert after["audioEnergy"] > old_stats["audioEnergy"], (old_stats, after)
    assert bram.sdp_versions() == versions

    # Muted stays muted across a switch; Escape closes the menu and gives focus back to its button.
    page.click("#mute")
    select.select_option(label="Fake Audio Input 2")
    until(lambda: [t for t in bram.local()["audio"] if t["label"] == "Fake Audio Input 2"], "the third microphone")
    assert bram.local()["audio"][0]["enabled"] is False
    page.click("#mute")
    assert bram.local()["audio"][0]["enabled"] is True
    select.focus()
    page.keyboard.press("Escape")
    expect(page.locator("#call-device-menu")).to_be_hidden()
    expect(page.locator("#call-devices")).to_be_focused()
    expect(page.locator("#call-devices")).to_have_attribute("aria-expanded", "false")


# ----------------------------------------------------------------------------------- speaking

RECORD_SPEAKING = """
(tiles) => {
  window.__spoke = window.__spoke || {};
  for (const [key, selector] of Object.entries(tiles)) {
    const tile = document.querySelector(selector);
    window.__spoke[key] = tile.dataset.speaking === 'true';
    new MutationObserver(() => { if (tile.dataset.speaking === 'true') window.__spoke[key] = true; })
      .observe(tile, {attributes: true, attributeFilter: ['data-speaking']});
  }
}
"""


def test_speaking_ring_lights_for_who_speaks_and_never_for_the_muted(call: Call) -> None:
    anna, bram, carla = call.anna, call.bram, call.carla
    carla.page.click("#mute")
    expect(carla.page.locator("#mute")).to_have_attribute("aria-pressed", "true")
    # What she said just before muting is still on its way (and the ring stays a moment): let it fade.
    for viewer in (anna, bram):
        expect(viewer.tile(carla)).to_have_attribute("data-speaking", "false", timeout=10_000)
    expect(carla.page.locator(".tile.self")).to_have_attribute("data-speaking", "false", timeout=10_000)
    carla.page.wait_for_timeout(1500)
    for viewer in (anna, bram):
        viewer.page.evaluate(RECORD_SPEAKING, {"carla": f'.tile[data-peer-id="{carla.id}"]'})
    carla.page.evaluate(RECORD_SPEAKING, {"self": ".tile.self"})

    # The fake microphones beep: the unmuted are seen speaking, on their own tile and on the others'.
    expect(anna.tile(bram)).to_have_attribute("data-speaking", "true", timeout=10_000)
    expect(bram.tile(anna)).to_have_attribute("data-speaking", "true", timeout=10_000)
    expect(carla.tile(anna)).to_have_attribute("data-speaking", "true", timeout=10_000)
    expect(anna.page.locator(".tile.self")).to_have_attribute("data-speaking", "true", timeout=10_000)
    anna.page.wait_for_timeout(3000)
    assert anna.page.evaluate("window.__spoke.carla") is False
    assert bram.page.evaluate("window.__spoke.carla") is False
    assert carla.page.evaluate("window.__spoke.self") is False

    # Unmuted, she lights up too (so the silence above was the mute, not a broken ring).
    carla.page.click("#mute")
    expect(anna.tile(carla)).to_have_attribute("data-speaking", "true", timeout=10_000)
    expect(carla.page.locator(".tile.self")).to_have_attribute("data-speaking", "true", timeout=10_000)


# ------------------------------------------------------------------------------- verification

def reveal_code(viewer: Person, other: Person) -> str:
    tile = viewer.tile(other)
    button = tile.locator(".tile-verify")
    if button.get_attribute("aria-expanded") != "true":
        button.click()
    expect(button).to_have_attribute("aria-expanded", "true")
    expect(tile.locator(".tile-verify-panel")).to_be_visible()
    code = tile.locator(".verify-code")
    expect(code).to_have_attribute("data-code", re.compile(r"^\d{4} \d{4} \d{4} \d{4}$"), timeout=10_000)
    value = code.get_attribute("data-code")
    assert value is not None and code.inner_text() == value
    return value


def test_verification_codes_are_equal_in_an_honest_call(call: Call) -> None:
    codes: dict[tuple[str, str], str] = {}
    for viewer in call.everyone:
        for other in call.everyone:
            if other is not viewer:
                codes[viewer.id, other.id] = reveal_code(viewer, other)
    pairs = list(itertools.combinations([person.id for person in call.everyone], 2))
    for one, two in pairs:
        assert codes[one, two] == codes[two, one]
    assert len({codes[pair] for pair in pairs}) == 3  # each connection has its own code
    # The code is the documented function of the two DTLS fingerprints the connection negotiated.
    sdps = call.anna.page.evaluate(FINGERPRINTS_JS)
    for other in (call.bram, call.carla):
        local, remote = sdps[other.id]
        assert codes[call.anna.id, other.id] == verification_code(fingerprint(local), fingerprint(remote))
    # Explained in the page's language; Escape closes the panel.
    expect(call.bram.tile(call.anna).locator(".tile-verify")).to_have_text("Controleer")
    expect(call.bram.tile(call.anna).locator(".verify-text")).to_contain_text("dezelfde code")
    expect(call.anna.tile(call.bram).locator(".verify-text")).to_contain_text("same code")
    button = call.anna.tile(call.bram).locator(".tile-verify")
    button.focus()
    call.anna.page.keyboard.press("Escape")
    expect(call.anna.tile(call.bram).locator(".tile-verify-panel")).to_be_hidden()
    expect(button).to_have_attribute("aria-expanded", "false")
    expect(button).to_be_focused()
    call.anna.page.keyboard.press("Enter")  # and the keyboard opens it again
    expect(call.anna.tile(call.bram).locator(".tile-verify-panel")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    call.anna.page.screenshot(path=str(ARTIFACTS / "call-verify-desktop.png"))
    call.bram.page.set_viewport_size({"width": 360, "height": 780})
    try:
        assert call.bram.page.evaluate("document.documentElement.scrollWidth") <= 360
        call.bram.page.screenshot(path=str(ARTIFACTS / "call-verify-phone.png"), full_page=True)
    finally:
        call.bram.page.set_viewport_size({"width": 1280, "height": 800})
