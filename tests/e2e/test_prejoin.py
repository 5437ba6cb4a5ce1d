"""The pre-join check in Chromium against `kijkmee serve` with its relay: choosing camera and microphone,
the microphone level, advice inside in-app browsers, the network check to our relay over UDP, TCP and
TLS, the join form's fields as the room asks for them, and device errors in their own words."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import socket
import sqlite3
import ssl
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, Route, ViewportSize, WebSocketRoute, expect

from kijkmee.config import ServeConfig
from kijkmee.storage import open_store
from metadata_store.crypto import KeyStore, default_key_folder
from metadata_store.service import DataHandling
from tests.e2e.ca import Pki
from tests.e2e.conftest import (
    ARTIFACTS,
    People,
    ServeProcess,
    launch_chromium,
    publish_screenshot,
    start_serve,
    stop_serve,
)
from tests.e2e.test_browser_call import join, wait_state

pytestmark = pytest.mark.netns

CONTROLLER = "acme"
# In every user agent below, so the test can prove the server never wrote one down.
UA_MARKER = "kijkmee-ua-marker-7c1e"


@dataclass
class Served:
    server: ServeProcess
    api_key: str
    ca: ssl.SSLContext

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.server.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json", **(headers or {})})
        with urllib.request.urlopen(request, context=self.ca, timeout=10) as response:
            return json.loads(response.read())

    def link(self) -> str:
        """A call link made the way the home page makes one."""
        room = self.request("POST", "/rooms", {}, {"Origin": self.server.url})
        return f"{self.server.url}/r/{room['room_id']}"

    def api_room(self, **options: Any) -> dict[str, Any]:
        """A room made through the controller API (POST /api/v1/rooms) with the controller's key."""
        room: dict[str, Any] = self.request("POST", "/api/v1/rooms", options,
                                            {"Authorization": f"Bearer {self.api_key}"})
        return room


async def _make_controller(data_dir: Path) -> str:
    """A controller with an API key, written to the data folder before the server starts."""
    config = ServeConfig(port=0, turn_port=0, turns_port=0, data_dir=data_dir).validate()
    store = await open_store(config)
    try:
        await store.ensure_controller(CONTROLLER, "Acme", dt.datetime.now(dt.UTC))
        _, key = await DataHandling(store).create_api_key(CONTROLLER, "prejoin test", "setup")
        return key
    finally:
        await store.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("prejoin") / "data"
    data_dir.mkdir(parents=True)
    api_key = asyncio.run(_make_controller(data_dir))
    server = start_serve(data_dir, "--allow-peer", "127.0.0.1/32",
                         "--cert-file", str(pki.cert_file), "--key-file", str(pki.key_file))
    try:
        yield Served(server, api_key, ssl.create_default_context(cafile=str(pki.ca_file)))
    finally:
        stop_serve(server)


@pytest.fixture(scope="module")
def browser(playwright: Playwright, pki: Pki) -> Iterator[Browser]:
    # Two fake cameras (fake_device_0 and fake_device_1); the fake microphones are there already.
    chromium = launch_chromium(playwright, pki=pki, drop_args=["--use-fake-device-for-media-stream"],
                               extra_args=["--use-fake-device-for-media-stream=device-count=2"])
    yield chromium
    chromium.close()


@pytest.fixture
def pages(browser: Browser) -> Iterator[People]:
    """One person a page; no certificate errors are ignored: the browser trusts the test CA."""
    with People(browser, ignore_https_errors=False, viewport={"width": 1280, "height": 800}) as crowd:
        yield crowd


def preview_label(page: Page, kind: str = "video") -> str | None:
    """The label of the preview's track of `kind`: the device the person sees and is heard through."""
    result: str | None = page.evaluate(
        """kind => {
          const stream = document.getElementById('preview').srcObject || null;
          const tracks = stream ? (kind === 'video' ? stream.getVideoTracks() : stream.getAudioTracks()) : [];
          return tracks.length ? tracks[0].label : null;
        }""",
        kind,
    )
    return result


def wait_preview_label(page: Page, label: str, kind: str = "video") -> None:
    page.wait_for_function(
        """([kind, label]) => {
          const stream = document.getElementById('preview').srcObject;
          const tracks = stream ? (kind === 'video' ? stream.getVideoTracks() : stream.getAudioTracks()) : [];
          return tracks.length === 1 && tracks[0].label === label && tracks[0].readyState === 'live';
        }""",
        arg=[kind, label],
        timeout=10_000,
    )


def option_labels(page: Page, select: str) -> list[str]:
    labels: list[str] = page.locator(f"{select} option").all_inner_texts()
    return labels


# ------------------------------------------------------------------------------------ devices


def test_camera_and_microphone_can_be_chosen_and_the_choice_is_kept_for_the_call_and_next_time(
    served: Served, pages: People
) -> None:
    url = served.link()
    page = pages.open(url)
    expect(page.locator("#devices")).to_be_visible()
    expect(page.locator("#camera-select option")).to_have_count(2)
    assert option_labels(page, "#camera-select") == ["fake_device_0", "fake_device_1"]
    assert "Fake Audio Input 1" in option_labels(page, "#mic-select")
    wait_preview_label(page, "fake_device_0")
    expect(page.locator("#camera-select")).to_be_enabled()
    expect(page.locator("#camera-select")).to_have_accessible_name("Camera")

    # Another camera: the preview shows it, the first one is let go of.
    first = page.evaluate_handle("document.getElementById('preview').srcObject.getVideoTracks()[0]")
    page.select_option("#camera-select", label="fake_device_1")
    wait_preview_label(page, "fake_device_1")
    assert page.evaluate("t => t.readyState", first) == "ended"
    # Another microphone: only the microphone is asked for again.
    page.select_option("#mic-select", label="Fake Audio Input 1")
    wait_preview_label(page, "Fake Audio Input 1", "audio")
    wait_preview_label(page, "fake_device_1")
    expect(page.locator("#message")).to_be_hidden()

    # Remembered for next time: the browser's device ids and nothing else.
    stored_choice = json.loads(page.evaluate("localStorage.getItem('kijkmee.devices')"))
    ids = page.evaluate("""() => {
      const s = document.getElementById('preview').srcObject;
      return {audio: s.getAudioTracks()[0].getSettings().deviceId, video: s.getVideoTracks()[0].getSettings().deviceId};
    }""")
    assert stored_choice == ids

    # And kept for the call: the other person receives the chosen camera and microphone.
    join(page)
    wait_state(page, "in-call")
    other = pages.open(url)
    join(other)
    wait_state(other, "in-call")
    page.wait_for_function("() => window.kijkmee.pcs.size === 1", timeout=10_000)
    page.wait_for_function(
        """() => {
          const [pc] = window.kijkmee.pcs.values();
          const labels = pc.getSenders().map(s => s.track && s.track.label).filter(Boolean).sort();
          return JSON.stringify(labels) === JSON.stringify(['Fake Audio Input 1', 'fake_device_1']);
        }""",
        timeout=10_000,
    )

    # A new visit (same browser profile) starts with the remembered devices straight away.
    again = page.context.new_page()
    again.goto(served.link())
    wait_preview_label(again, "fake_device_1")
    wait_preview_label(again, "Fake Audio Input 1", "audio")
    expect(again.locator("#camera-select")).to_have_value(ids["video"])
    expect(again.locator("#message")).to_be_hidden()


def test_the_microphone_level_moves_and_stops_when_the_call_starts(served: Served, pages: People) -> None:
    page = pages.open(served.link())
    meter = page.locator("#level")
    expect(meter).to_be_visible()
    expect(meter).to_have_attribute("role", "meter")
    expect(meter).to_have_accessible_name("Microphone level")
    # Chromium's fake microphone beeps: the level goes up and down.
    seen = []
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        seen.append(int(meter.get_attribute("aria-valuenow") or "0"))
        time.sleep(0.05)
    assert max(seen) >= 30, seen
    assert len(set(seen)) >= 5, seen
    assert min(seen) < max(seen) - 20, seen

    join(page)
    wait_state(page, "in-call")
    expect(page.locator("#prejoin")).to_be_hidden()
    # Left the pre-join view: the meter is stopped and at rest.
    expect(meter).to_have_attribute("aria-valuenow", "0")
    time.sleep(0.5)
    expect(meter).to_have_attribute("aria-valuenow", "0")


# ------------------------------------------------------------------------------ in-app browsers

ANDROID_WEBVIEW = ("Mozilla/5.0 (Linux; Android 13; Pixel 7 Build/TQ3A.230805.001; wv) AppleWebKit/537.36 "
                   "(KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.144 Mobile Safari/537.36")
IOS_WEBVIEW = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
               "Mobile/15E148")

IN_APP = [
    # (app, user agent, words of the English steps, words of the Dutch steps)
    ("WhatsApp", f"{ANDROID_WEBVIEW} WhatsApp/2.23.20.76 {UA_MARKER}", '⋮ at the top right, then "Open in Chrome"',
     'rechtsboven op ⋮ en kies "Openen in Chrome"'),
    ("Facebook", f"{IOS_WEBVIEW} [FBAN/FBIOS;FBAV/440.0.0.36.105;FBBV/541000000;FBDV/iPhone14,5;FBMD/iPhone;"
                 f"FBSN/iOS;FBSV/17.1;FBSS/3;FBLC/nl_NL;FBOP/5] {UA_MARKER}",
     '⋯ at the top or bottom right, then "Open in external browser"', 'op ⋯ en kies "Openen in externe browser"'),
    ("Messenger", f"{ANDROID_WEBVIEW} [FB_IAB/Orca-Android;FBAV/431.0.0.7.108;] {UA_MARKER}",
     '⋮ at the top right, then "Open in external browser"', 'rechtsboven op ⋮ en kies "Openen in externe browser"'),
    ("Instagram", f"{IOS_WEBVIEW} Instagram 307.0.0.34.111 (iPhone14,5; iOS 17_1; nl_NL; nl; scale=3.00; "
                  f"1170x2532; 531893383) {UA_MARKER}",
     '⋯ at the top right, then "Open in external browser"', 'rechtsboven op ⋯ en kies "Openen in externe browser"'),
    ("LinkedIn", f"{IOS_WEBVIEW} [LinkedInApp]/9.29.2 {UA_MARKER}", '⋯ at the top right, then "Open in Safari"',
     'rechtsboven op ⋯ en kies "Open in Safari"'),
]


@pytest.mark.parametrize(("app", "user_agent", "steps_en", "steps_nl"), IN_APP, ids=[a[0] for a in IN_APP])
def test_in_app_browsers_are_told_how_to_open_the_call_in_a_real_browser(
    served: Served, pages: People, app: str, user_agent: str, steps_en: str, steps_nl: str
) -> None:
    url = served.link()
    page = pages.open(url, user_agent=user_agent, viewport={"width": 390, "height": 844})
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=served.server.url)
    advice = page.locator("#inapp")
    expect(advice).to_be_visible()
    expect(advice.locator("h2")).to_have_text("Open this page in your browser")
    expect(page.locator("#inapp-text")).to_contain_text(f"inside {app}")
    expect(page.locator("#inapp-steps")).to_contain_text(steps_en)
    expect(page.locator("#inapp-link")).to_have_value(url)
    page.click("#inapp-copy")
    expect(page.locator("#inapp-status")).to_contain_text("Link copied")
    assert page.evaluate("navigator.clipboard.readText()") == url

    page.click("#lang")
    expect(advice.locator("h2")).to_have_text("Open deze pagina in je browser")
    expect(page.locator("#inapp-text")).to_contain_text(f"in {app} geopend")
    expect(page.locator("#inapp-steps")).to_contain_text(steps_nl)
    expect(page.locator("#inapp-status")).to_contain_text("Link gekopieerd")
    # The advice is only advice: joining still works from here.
    expect(page.locator("#join")).to_be_enabled()
    if app == "WhatsApp":
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "prejoin-inapp-phone.png"), full_page=True)

    # The user agent went nowhere: not in the server's log, not in its database.
    for path in [served.server.log_file, *served.server.data_dir.rglob("*")]:
        if path.is_file():
            assert UA_MARKER.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("user_agent", [
    None,  # this Chromium's own
    ("Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
     "Mobile Safari/537.36"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.1 Mobile/15E148 Safari/604.1"),
], ids=["chromium", "android-chrome", "iphone-safari"])
def test_ordinary_browsers_get_no_such_advice(served: Served, pages: People, user_agent: str | None) -> None:
    page = pages.open(served.link(), user_agent=user_agent, locale="nl-NL")
    expect(page.locator("#devices")).to_be_visible()  # the pre-join check is up and running
    expect(page.locator("#join")).to_be_enabled()
    expect(page.locator("#inapp")).to_be_hidden()


def test_the_pure_decisions_behind_the_check(served: Served, pages: People) -> None:
    """precheck.js on its own, in the browser that runs it: user agents, relay URLs, verdicts, form."""
    page = pages.open(served.server.url + "/")
    found = page.evaluate("""async (uas) => {
      const p = await import('/static/js/precheck.js');
      return {
        apps: uas.map(ua => p.detectInAppBrowser(ua)),
        platforms: uas.map(ua => p.platformOf(ua)),
        transports: ['turn:127.0.0.1:3478?transport=udp', 'turn:127.0.0.1:3478?transport=tcp',
                     'turns:127.0.0.1:5349?transport=tcp', 'turn:[::1]:3478', 'stun:127.0.0.1:3478', 'https://x']
                    .map(p.transportOfUrl),
        split: p.serversByTransport([{urls: ['turn:h:1?transport=udp', 'turns:h:2?transport=tcp'],
                                      username: 'u', credential: 'c'}, null, {urls: 'stun:h:3'}]),
        verdicts: [{udp: 'ok', tcp: 'ok', tls: 'ok'}, {udp: 'fail', tcp: 'ok', tls: 'ok'},
                   {udp: 'ok', tcp: 'absent', tls: 'absent'}, {udp: 'fail', tcp: 'fail', tls: 'absent'}, {}]
                  .map(p.connectivityVerdict),
        asks: ['none', 'name', 'phone', 'name+phone', 'something-new'].map(p.askFields),
        phones: ['+31 6 1234 5678', '06-12345678', '020 123 4567', '', 'call me', '12', '+31 6 1234 5678 x']
                .map(p.phoneAcceptable),
      };
    }""", [ua for _, ua, _, _ in IN_APP] + [
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.1 Mobile/15E148 Safari/604.1",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    ])
    assert found["apps"] == ["whatsapp", "facebook", "messenger", "instagram", "linkedin", None, None]
    assert found["platforms"] == ["android", "ios", "android", "ios", "ios", "ios", "other"]
    assert found["transports"] == ["udp", "tcp", "tls", "udp", None, None]
    assert found["split"] == {"udp": [{"urls": ["turn:h:1?transport=udp"], "username": "u", "credential": "c"}],
                              "tls": [{"urls": ["turns:h:2?transport=tcp"], "username": "u", "credential": "c"}]}
    assert found["verdicts"] == ["good", "partial", "good", "blocked", "unavailable"]
    assert found["asks"] == [{"name": False, "phone": False}, {"name": True, "phone": False},
                             {"name": False, "phone": True}, {"name": True, "phone": True},
                             {"name": True, "phone": False}]
    assert found["phones"] == [True, True, True, True, False, False, False]


# ------------------------------------------------------------------------------ network check


def verdict(page: Page) -> str:
    """The check's verdict once it has one (it starts CHECK_DELAY_MS after the page, then runs)."""
    box = page.locator("#netcheck-verdict")
    expect(box).to_have_attribute("data-verdict", re.compile(r"^(?!checking$)[a-z]+$"), timeout=20_000)
    return str(box.get_attribute("data-verdict"))


def results(page: Page) -> dict[str, str]:
    found: dict[str, str] = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#netcheck [data-transport]')]
               .map(li => [li.dataset.transport, li.hidden ? 'hidden' : li.dataset.result]))"""
    )
    return found


def test_the_network_check_finds_all_three_ways_to_the_relay(served: Served, pages: People) -> None:
    url = served.link()
    page = pages.open(url)
    expect(page.locator("#netcheck")).to_be_visible()
    found = verdict(page), results(page)
    assert found == ("good", {"udp": "ok", "tcp": "ok", "tls": "ok"})
    expect(page.locator("#netcheck-verdict")).to_have_text("All good: your network can reach our server in every way.")
    expect(page.locator("#netcheck li")).to_have_text(
        ["Fast route (UDP) Works", "Backup route (TCP) Works", "Secure web route (TLS) Works"])
    page.click("#lang")
    expect(page.locator("#netcheck-verdict")).to_contain_text("Alles in orde")
    expect(page.locator("#netcheck li").first).to_have_text("Snelle route (UDP) Werkt")
    # The check joined nothing and stored nothing.
    room = url.rsplit("/", 1)[1]
    with closing(sqlite3.connect(served.server.data_dir / "kijkmee.sqlite3")) as db:
        assert db.execute("SELECT COUNT(*) FROM sessions WHERE room_id = ?", (room,)).fetchone() == (0,)


def closed_port() -> int:
    """A loopback port nobody listens on (TCP and UDP): what a firewall that drops a transport looks like."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", 0))
        port = int(tcp.getsockname()[1])
    return port


def point_at(served: Served, port: int, transports: set[str]) -> Callable[[Route], None]:
    """Answer /r/<room>/check with the server's own answer, except that the URLs of `transports` lead
    to `port` where nothing listens (the credentials stay the server's)."""

    def handle(route: Route) -> None:
        body = served.request("GET", urllib.parse.urlsplit(route.request.url).path)
        for server in body["iceServers"]:
            urls = []
            for url in server["urls"]:
                transport = "tls" if url.startswith("turns:") else url.rsplit("=", 1)[1]
                if transport in transports:
                    scheme, rest = url.split(":", 1)
                    host, query = rest.split("?", 1)
                    url = f"{scheme}:{host.rsplit(':', 1)[0]}:{port}?{query}"
                urls.append(url)
            server["urls"] = urls
        route.fulfill(json=body, headers={"Cache-Control": "no-store"})

    return handle


def test_the_check_waits_while_a_join_is_under_way_and_runs_when_the_screen_is_back(
    served: Served, pages: People
) -> None:
    """The network check never runs while a join is under way (its three test connections would compete
    with the call's own set-up). Here the join gets no answer (the test swallows it), so the page waits
    out its time limit, says the server can't be reached and shows the pre-join screen again: only then
    does the check run."""
    checks: list[float] = []

    def swallow_the_join(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()
        ws.on_message(lambda m: None if isinstance(m, str) and re.match(r'^42\d*\["join"', m) else server.send(m))
        server.on_message(ws.send)

    def setup(page: Page) -> None:
        page.context.route_web_socket(re.compile(r"/socket\.io/"), swallow_the_join)
        page.on("request", lambda r: checks.append(time.monotonic()) if r.url.endswith("/check") else None)

    page = pages.open(None, before=setup)
    page.goto(served.link())
    join(page)  # at once: well before the check's CHECK_DELAY_MS (1.2 s)
    joined_at = time.monotonic()
    wait_state(page, "error", timeout=30_000)  # the join's time limit (10 s) ran out
    assert page.locator("#message").get_attribute("data-code") == "server-unreachable"
    assert verdict(page) == "good"
    # Not 1.2 s after the page came up, but once the join had given up (10 s after the click).
    assert checks and min(checks) - joined_at > 5, "the check ran while the join was under way"


def test_a_network_that_blocks_some_or_all_ways_gets_a_plain_verdict(served: Served, pages: People) -> None:
    port = closed_port()
    page = pages.open(None, before=lambda p: p.route("**/check", point_at(served, port, {"udp"})))
    page.goto(served.link())
    assert verdict(page) == "partial"
    assert results(page) == {"udp": "fail", "tcp": "ok", "tls": "ok"}
    expect(page.locator("#netcheck-verdict")).to_have_text(
        "Your network blocks some connections. Your call can still go through our server, and it stays encrypted.")
    expect(page.locator('#netcheck [data-transport="udp"]')).to_have_text("Fast route (UDP) Blocked")
    expect(page.locator("#join")).to_be_enabled()  # never held up by the check

    page.unroute("**/check")
    page.route("**/check", point_at(served, port, {"udp", "tcp", "tls"}))
    page.click("#netcheck-again")
    expect(page.locator("#netcheck-verdict")).to_have_attribute("data-verdict", "checking")
    assert verdict(page) == "blocked"
    assert results(page) == {"udp": "fail", "tcp": "fail", "tls": "fail"}
    expect(page.locator("#netcheck-verdict")).to_contain_text("We can't reach our server from this network")
    page.click("#lang")
    expect(page.locator("#netcheck-verdict")).to_contain_text("We kunnen onze server vanaf dit netwerk niet bereiken")
    # Joining still works: the check only advises.
    join(page)
    wait_state(page, "in-call")


# ------------------------------------------------------------------------------ the join form


def stored_sessions(data_dir: Path, room: str) -> list[tuple[str | None, str | None]]:
    """(name, phone) of the room's session rows, decrypted with the controller's key, as its owner would."""
    key = KeyStore(default_key_folder(data_dir)).get(CONTROLLER)
    with closing(sqlite3.connect(data_dir / "kijkmee.sqlite3")) as db:
        rows = db.execute("SELECT name, phone FROM sessions WHERE room_id = ? ORDER BY id", (room,)).fetchall()
    def plain(column: str, value: bytes | None) -> str | None:
        return None if value is None else key.decrypt("sessions", column, value)

    return [(plain("name", name), plain("phone", phone)) for name, phone in rows]


def test_a_room_that_asks_for_a_phone_number_gets_one_and_it_is_stored(served: Served, pages: People) -> None:
    room = served.api_room(ask="phone")
    page = pages.open(room["url"])
    expect(page.locator("#phone")).to_be_visible()
    expect(page.locator("#name")).to_be_hidden()
    phone = page.locator("#phone")
    expect(phone).to_have_attribute("type", "tel")
    expect(phone).to_have_attribute("autocomplete", "tel")
    expect(phone).to_have_accessible_name("Your phone number (optional)")
    expect(phone).to_have_accessible_description("Only the organiser of this call sees it. It is stored encrypted.")

    # A typo is pointed out at the field, and nothing is sent.
    page.fill("#phone", "call me maybe")
    page.click("#join")
    expect(page.locator("#phone-error")).to_be_visible()
    expect(phone).to_have_attribute("aria-invalid", "true")
    expect(phone).to_be_focused()
    assert page.evaluate("window.kijkmee.state") == "prejoin"

    page.fill("#phone", "+31 6 1234 5678")
    expect(page.locator("#phone-error")).to_be_hidden()
    page.click("#join")
    wait_state(page, "in-call")
    page.click("#leave")
    wait_state(page, "left")
    assert stored_sessions(served.server.data_dir, room["id"]) == [(None, "+31 6 1234 5678")]
    assert "+31 6 1234 5678" not in served.server.logs()


@pytest.mark.parametrize(("ask", "fields"), [("name+phone", (True, True)), ("none", (False, False))])
def test_the_form_shows_what_the_room_asks_for(served: Served, pages: People, ask: str,
                                               fields: tuple[bool, bool]) -> None:
    room = served.api_room(ask=ask)
    page = pages.open(room["url"], locale="nl-NL")
    expect(page.locator("#netcheck")).to_be_visible()  # the status has been read by now
    name, phone = page.locator("#name"), page.locator("#phone")
    for locator, shown in ((name, fields[0]), (phone, fields[1])):
        if shown:
            expect(locator).to_be_visible()
        else:
            expect(locator).to_be_hidden()
    if fields[1]:
        expect(phone).to_have_accessible_name("Je telefoonnummer (niet verplicht)")
        expect(page.locator("#phone-hint")).to_have_text(
            "Alleen de organisator van dit gesprek ziet het. Het wordt versleuteld opgeslagen.")
    if ask == "name+phone":
        page.fill("#name", "Anna")
        page.fill("#phone", "06-12345678")
        page.click("#join")
        wait_state(page, "in-call")
        page.click("#leave")
        wait_state(page, "left")
        assert stored_sessions(served.server.data_dir, room["id"]) == [("Anna", "06-12345678")]


# ------------------------------------------------------------------------------ device errors


def test_overconstrained_has_its_own_words_in_english_and_dutch(served: Served, pages: People) -> None:
    failing = ("navigator.mediaDevices.getUserMedia = () => "
               "Promise.reject(new DOMException('test', 'OverconstrainedError'));")
    page = pages.open(served.link(), init_script=failing)
    box = page.locator("#message")
    expect(box).to_have_attribute("data-code", "overconstrained")
    expect(box).to_contain_text("couldn't be started with the settings this page asks for")
    page.click("#lang")
    expect(box).to_contain_text("kon niet starten met de instellingen die deze pagina vraagt")


def test_a_remembered_camera_that_is_gone_falls_back_to_one_that_works(served: Served, pages: People) -> None:
    # A camera chosen on an earlier visit that isn't there any more: the browser refuses the exact
    # device (OverconstrainedError), and the page asks once more without it.
    remembered = "localStorage.setItem('kijkmee.devices', JSON.stringify({video: 'a-camera-that-is-gone'}));"
    page = pages.open(served.link(), init_script=remembered)
    wait_preview_label(page, "fake_device_0")
    expect(page.locator("#devices")).to_be_visible()
    expect(page.locator("#message")).to_be_hidden()


# ------------------------------------------------------------------------------ screenshots


@pytest.mark.parametrize(("name", "viewport"), [("desktop", {"width": 1280, "height": 800}),
                                                 ("phone", {"width": 360, "height": 780})])
def test_screenshots_of_the_pre_join_check(served: Served, pages: People, name: str, viewport: ViewportSize) -> None:
    room = served.api_room(ask="name+phone")
    page = pages.open(room["url"], viewport=viewport)
    assert verdict(page) == "good"
    expect(page.locator("#devices")).to_be_visible()
    expect(page.locator("#level")).to_be_visible()
    page.fill("#name", "Anna")
    # Nothing sticks out sideways, even at 360 px: no horizontal scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    for element in ("#join", "#camera-select", "#mic-select", "#phone", "#netcheck"):
        box = page.locator(element).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"], (element, box)
    page.wait_for_function("() => Number(document.getElementById('level').getAttribute('aria-valuenow')) > 20")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"prejoin-{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    publish_screenshot(shot)
