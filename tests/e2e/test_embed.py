"""A controller's own site shows a kijkmee call in an iframe (/embed.js, docs/embedding.md), in Chromium.

The controller's site is examples/embed served over HTTPS from another loopback origin
(https://127.0.0.2:<port>), rendered the way a controller's server would after POST /api/v1/rooms; a
site the controller did not allow lives at https://127.0.0.3:<port>. Everything is trusted through the
test CA (tests/e2e/ca.py), as in a real deployment: no certificate errors are ignored."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import json
import re
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from playwright.sync_api import Browser, Frame, Page, Playwright, expect

from kijkmee.config import ServeConfig
from kijkmee.storage import open_store
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
    trusted_pki,
)
from tests.e2e.test_accessibility import AUDIT_JS
from tests.e2e.test_browser_call import join, wait_for_media_from, wait_state

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "embed"
SHOP_IP, OTHER_IP = "127.0.0.2", "127.0.0.3"
PLACEHOLDER = "https://call.example.nl"
ROOM_ID = re.compile(r"[A-Za-z0-9_-]{22,64}")
# In every frame of these tests: how often the page asked for camera or microphone, and every track it
# got, so a test can tell whether a camera or microphone is still running.
COUNT_GET_USER_MEDIA = """
(() => {
  window.__askedForMedia = 0;
  window.__tracks = [];
  const devices = navigator.mediaDevices;
  if (!devices) return;
  const original = devices.getUserMedia.bind(devices);
  devices.getUserMedia = async (constraints) => {
    window.__askedForMedia += 1;
    const stream = await original(constraints);
    window.__tracks.push(...stream.getTracks());
    return stream;
  };
})();
"""


# ------------------------------------------------------------------------------ the controller's site


class _TlsServer(ThreadingHTTPServer):
    """HTTPS with the TLS handshake in the request's own thread, so a slow client can't stall accept()."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext, kijkmee_url: str) -> None:
        super().__init__(address, _SiteHandler)
        self.context = context
        self.kijkmee_url = kijkmee_url

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()


class _SiteHandler(BaseHTTPRequestHandler):
    server: _TlsServer

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/":
            body, kind = self._render(query), "text/html; charset=utf-8"
        elif url.path in ("/host.js", "/host.css"):
            body = (EXAMPLE / url.path[1:]).read_bytes()
            kind = "text/javascript; charset=utf-8" if url.path.endswith(".js") else "text/css; charset=utf-8"
        elif url.path == "/blank.html":
            body, kind = b"<!doctype html><meta charset=utf-8><title>another frame</title><p>another frame</p>", \
                "text/html; charset=utf-8"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _render(self, query: dict[str, str]) -> bytes:
        """examples/embed/index.html as a controller's server renders it: its kijkmee server's address and
        the room it just made (checked: only a room id goes into the page)."""
        room = query.get("room", "")
        if ROOM_ID.fullmatch(room) is None:
            raise ValueError("not a room id")
        page = (EXAMPLE / "index.html").read_text(encoding="utf-8")
        if "frame" in query:  # a test that puts more frames into this page: its own and another site's
            extra = query["frame"]
            if re.fullmatch(r"https://[0-9.]+:[0-9]+", extra) is None:
                raise ValueError("not an origin")
            page = page.replace(f"frame-src {PLACEHOLDER}", f"frame-src {PLACEHOLDER} 'self' {extra}")
        if "timeout" in query:
            page = page.replace('data-ready-timeout-ms="15000"', f'data-ready-timeout-ms="{int(query["timeout"])}"')
        return page.replace(PLACEHOLDER, self.server.kijkmee_url).replace("ROOM_ID", room).encode()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test output is for failures."""


@dataclass
class Site:
    origin: str
    server: _TlsServer

    def page_for(self, room_id: str, **extra: str) -> str:
        return f"{self.origin}/?{urlencode({'room': room_id, **extra})}"


def start_site(ip: str, pki: Pki, kijkmee_url: str) -> Site:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    server = _TlsServer((ip, 0), context, kijkmee_url)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return Site(f"https://{ip}:{server.server_address[1]}", server)


# ------------------------------------------------------------------------------ fixtures


@dataclass
class Kijkmee:
    server: ServeProcess
    api_key: str
    ca: ssl.SSLContext

    @property
    def url(self) -> str:
        return self.server.url

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """The controller API with the controller's key, as a controller's server calls it."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, context=self.ca, timeout=10) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def room(self, **options: Any) -> dict[str, Any]:
        status, room = self.api("POST", "/api/v1/rooms", options)
        assert status == 201, room
        return dict(room)

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/healthz", context=self.ca, timeout=10) as response:
            return dict(json.loads(response.read()))


async def _make_controller(data_dir: Path) -> str:
    config = ServeConfig(port=0, turn_port=0, turns_port=0, data_dir=data_dir).validate()
    store = await open_store(config)
    try:
        await store.ensure_controller("shop", "Example Shop", dt.datetime.now(dt.UTC))
        _, key = await DataHandling(store).create_api_key("shop", "embed test", "setup")
        return key
    finally:
        await store.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return trusted_pki(tmp_path_factory, ips=("127.0.0.1", SHOP_IP, OTHER_IP))


@pytest.fixture(scope="module")
def kijkmee(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Kijkmee]:
    data_dir = tmp_path_factory.mktemp("embed") / "data"
    data_dir.mkdir(parents=True)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # Playwright's sync API may own this thread's loop
        api_key = pool.submit(asyncio.run, _make_controller(data_dir)).result()
    server = start_serve(data_dir, "--cert-file", str(pki.cert_file), "--key-file", str(pki.key_file))
    try:
        yield Kijkmee(server, api_key, ssl.create_default_context(cafile=str(pki.ca_file)))
    finally:
        stop_serve(server)


@pytest.fixture(scope="module")
def sites(pki: Pki, kijkmee: Kijkmee) -> Iterator[tuple[Site, Site]]:
    shop, other = start_site(SHOP_IP, pki, kijkmee.url), start_site(OTHER_IP, pki, kijkmee.url)
    yield shop, other
    for site in (shop, other):
        site.server.shutdown()
        site.server.server_close()


@pytest.fixture(scope="module")
def browser(playwright: Playwright, pki: Pki) -> Iterator[Browser]:
    chromium = launch_chromium(playwright, pki=pki)  # trusts the test CA: every https origin here is trusted
    yield chromium
    chromium.close()


@pytest.fixture
def people(browser: Browser) -> Iterator[People]:
    # No certificate errors ignored; the counter runs in every frame, the call's iframe too.
    with People(browser, ignore_https_errors=False, viewport={"width": 1280, "height": 800},
                init_script=COUNT_GET_USER_MEDIA) as crowd:
        yield crowd


# ------------------------------------------------------------------------------ helpers


def events(shop: Page, name: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The events the controller's page received and listed (#events), in order."""
    items: list[list[str]] = shop.locator("#events li").evaluate_all(
        "items => items.map(li => [li.dataset.event, li.textContent])")
    out = [(event, json.loads(text[len(event) + 1:])) for event, text in items]
    return [e for e in out if name is None or e[0] == name]


def wait_event(shop: Page, name: str, count: int = 1, timeout: float = 15_000) -> dict[str, Any]:
    """Wait for the `count`th event `name` on the controller's page; its data."""
    shop.wait_for_function(
        "([name, count]) => document.querySelectorAll(`#events li[data-event='${name}']`).length >= count",
        arg=[name, count], timeout=timeout)
    return events(shop, name)[count - 1][1]


def call_frame(shop: Page) -> Frame:
    handle = shop.locator("#call iframe").element_handle()
    assert handle is not None
    frame = handle.content_frame()
    assert frame is not None
    return frame


def frame_state(frame: Frame, state: str, timeout: float = 15_000) -> None:
    frame.wait_for_function("s => window.kijkmee && window.kijkmee.state === s", arg=state, timeout=timeout)


def sending(frame: Frame, kind: str) -> bool:
    """Whether the call page sends the others a live, enabled track of `kind` ('audio' | 'video')."""
    result: bool = frame.evaluate(
        """kind => [...window.kijkmee.pcs.values()].flatMap((pc) => pc.getSenders())
             .some((s) => s.track && s.track.kind === kind && s.track.readyState === 'live' && s.track.enabled)""",
        kind)
    return result


def devices_running(frame: Frame) -> list[tuple[str, bool]]:
    """(kind, enabled) of the camera/microphone tracks the page got that still run (its light is on)."""
    result: list[list[Any]] = frame.evaluate(
        "window.__tracks.filter((t) => t.readyState === 'live').map((t) => [t.kind, t.enabled])")
    return sorted((kind, enabled) for kind, enabled in result)


def wait_for_no_rooms(kijkmee: Kijkmee, timeout: float = 5) -> int:
    deadline = time.monotonic() + timeout
    while (rooms := int(kijkmee.health()["rooms"])) and time.monotonic() < deadline:
        time.sleep(0.1)
    return rooms


def audit(target: Page | Frame, view: str) -> None:
    """tests/e2e/test_accessibility.py's audit of a view: fits, names its controls, reads well, translated."""
    report: dict[str, Any] = target.evaluate(AUDIT_JS)
    problems = {key: report[key] for key in ("lowContrast", "unnamed", "untranslated") if report[key]}
    if report["overflow"] > 0:
        problems["overflow"] = report["overflow"]
    assert not problems, f"{view} ({report['lang']}): {json.dumps(problems, indent=1)}"


def save_screenshot(name: str, take: Any) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    take(path=str(shot))
    publish_screenshot(shot)


# ------------------------------------------------------------------------------ tests


def test_an_embedded_call_tells_the_site_what_happens_and_takes_its_commands(
    kijkmee: Kijkmee, sites: tuple[Site, Site], people: People
) -> None:
    shop_site, _ = sites
    room = kijkmee.room(embed_origins=[shop_site.origin])
    shop = people.open(shop_site.page_for(room["id"]))
    assert wait_event(shop, "ready") == {"state": "prejoin"}
    frame = call_frame(shop)
    assert frame.url.startswith(room["url"] + "#embed=")
    # The customer joins inside the frame, by their own click.
    join(frame, "Anna Klant")  # a Frame has the same locator methods
    joined = wait_event(shop, "joined")
    assert joined["participants"] == 1 and set(joined) == {"peerId", "participants"}
    assert joined["peerId"] == frame.evaluate("window.kijkmee.selfId")

    # The shop's employee joins from an ordinary call page.
    employee = people.open(room["url"])
    join(employee, "Bram Medewerker")
    wait_state(employee, "in-call")
    arrived = wait_event(shop, "participant-joined")
    assert arrived == {"peerId": employee.evaluate("window.kijkmee.selfId"), "participants": 2}
    wait_for_media_from(frame, 1)
    wait_for_media_from(employee, 1)
    expect(frame.locator("#tiles .tile")).to_have_count(2)
    save_screenshot("embed-desktop.png", shop.screenshot)

    # The shop's own buttons drive the call's buttons: same state, same tracks.
    for command, button, kind, pressed in [("mute", "#mute", "audio", True), ("unmute", "#mute", "audio", False),
                                           ("camera-off", "#camera", "video", True),
                                           ("camera-on", "#camera", "video", False)]:
        shop.click(f"button[data-command='{command}']")
        expect(frame.locator(button)).to_have_attribute("aria-pressed", str(pressed).lower())
        frame.wait_for_function("([kind, on]) => [...window.kijkmee.pcs.values()].flatMap((pc) => pc.getSenders())"
                                ".some((s) => s.track && s.track.kind === kind && s.track.readyState === 'live'"
                                " && s.track.enabled) === on", arg=[kind, not pressed])
        assert sending(frame, kind) is (not pressed), command
        if command == "camera-off":  # off means off: the camera itself stops, its light goes out
            assert devices_running(frame) == [("audio", True)]
    changes = [data for _, data in events(shop, "media-changed")]
    assert changes == [{"muted": True, "cameraOff": False}, {"muted": False, "cameraOff": False},
                       {"muted": False, "cameraOff": True}, {"muted": False, "cameraOff": False}]
    # The call's own button tells the shop too.
    frame.click("#mute")
    assert wait_event(shop, "media-changed", count=5) == {"muted": True, "cameraOff": False}
    shop.click("button[data-command='unmute']")
    expect(frame.locator("#mute")).to_have_attribute("aria-pressed", "false")

    # A phone: the call fills the width of a 360 px screen, nothing sticks out sideways.
    shop.set_viewport_size({"width": 360, "height": 800})
    expect(frame.locator("#leave")).to_be_visible()
    # The example gives the call the screen's height: its buttons are in view without scrolling.
    assert frame.evaluate("document.getElementById('leave').getBoundingClientRect().bottom <= innerHeight")
    assert frame.evaluate("document.documentElement.scrollWidth") <= frame.evaluate("innerWidth")
    assert shop.evaluate("document.documentElement.scrollWidth") <= 360
    time.sleep(0.5)  # let the pictures settle after the reflow (for the screenshot only)
    save_screenshot("embed-phone.png", shop.screenshot)
    shop.set_viewport_size({"width": 1280, "height": 800})

    employee.click("#leave")
    assert wait_event(shop, "participant-left") == {"peerId": arrived["peerId"], "participants": 1}
    shop.click("button[data-command='leave']")
    assert wait_event(shop, "left") == {}
    frame_state(frame, "left")
    expect(frame.locator("#left")).to_be_visible()
    # Inside someone else's site a link to our home page would open a blank frame: it is not shown.
    expect(frame.locator("#left a[href='/']")).to_be_hidden()
    # Nothing personal went to the shop: not the names typed in the call, no address.
    log = shop.locator("#events").inner_text()
    for secret in ("Anna", "Bram", "127.0.0.1", room["id"]):
        assert secret not in log


def test_a_full_call_shows_its_own_view_and_tells_the_site(
    kijkmee: Kijkmee, sites: tuple[Site, Site], people: People
) -> None:
    shop_site, _ = sites
    room = kijkmee.room(capacity=1, embed_origins=[shop_site.origin])
    first = people.open(room["url"])
    join(first)
    wait_state(first, "in-call")
    shop = people.open(shop_site.page_for(room["id"]))
    wait_event(shop, "ready")
    frame = call_frame(shop)
    join(frame)
    assert wait_event(shop, "room-full") == {}
    frame_state(frame, "full")
    expect(frame.locator("#full")).to_be_visible()
    expect(frame.locator("#full-title")).to_have_text("This call is full")
    expect(frame.locator("#prejoin")).to_be_hidden()
    assert devices_running(frame) == []  # camera and microphone are off again while waiting
    audit(frame, "full")
    save_screenshot("room-full.png", shop.locator("#call iframe").screenshot)
    # The next step works: once the seat is free, "Try again" gets in.
    first.click("#leave")
    wait_state(first, "left")
    frame.click("#full-retry")
    assert wait_event(shop, "joined")["participants"] == 1
    frame_state(frame, "in-call")
    frame.click("#leave")  # a goodbye frees the seat now (closing the page would hold it for a while)
    wait_event(shop, "left")


def test_an_expired_link_says_so_and_never_asks_for_the_camera(
    kijkmee: Kijkmee, sites: tuple[Site, Site], people: People
) -> None:
    shop_site, _ = sites
    room = kijkmee.room(embed_origins=[shop_site.origin])
    assert kijkmee.api("DELETE", f"/api/v1/rooms/{room['id']}")[0] == 204
    shop = people.open(shop_site.page_for(room["id"]))
    wait_event(shop, "ready")
    assert wait_event(shop, "expired") == {}
    frame = call_frame(shop)
    frame_state(frame, "expired")
    expect(frame.locator("#expired")).to_be_visible()
    expect(frame.locator("#prejoin")).to_be_hidden()
    assert frame.evaluate("window.__askedForMedia") == 0
    audit(frame, "expired, embedded")
    save_screenshot("link-expired.png", shop.locator("#call iframe").screenshot)
    assert "joined" not in [name for name, _ in events(shop)]

    # The same link opened directly, in Dutch: the same plain answer, and no camera either.
    page = people.open(room["url"], locale="nl-NL")
    wait_state(page, "expired")
    expect(page.locator("#expired-title")).to_have_text("Deze link werkt niet meer")
    expect(page.locator("#expired a[href='/']")).to_be_visible()  # next step: start a new call
    assert page.evaluate("window.__askedForMedia") == 0
    audit(page, "expired")


def test_the_controller_ends_the_call_for_everyone_in_it(
    kijkmee: Kijkmee, sites: tuple[Site, Site], people: People
) -> None:
    shop_site, _ = sites
    assert wait_for_no_rooms(kijkmee) == 0  # the other tests' calls are over
    room = kijkmee.room(embed_origins=[shop_site.origin])
    shop = people.open(shop_site.page_for(room["id"]))
    wait_event(shop, "ready")
    frame = call_frame(shop)
    join(frame)
    employee = people.open(room["url"])
    join(employee)
    wait_event(shop, "participant-joined")
    wait_state(employee, "in-call")
    assert kijkmee.health()["rooms"] == 1

    assert kijkmee.api("DELETE", f"/api/v1/rooms/{room['id']}")[0] == 204
    assert wait_event(shop, "ended") == {}
    frame_state(frame, "ended")
    expect(frame.locator("#ended")).to_be_visible()
    expect(frame.locator("#ended-title")).to_have_text("The call has ended")
    wait_state(employee, "ended")
    expect(employee.locator("#ended")).to_be_visible()
    for page_or_frame in (frame, employee):
        expect(page_or_frame.locator("#tiles .tile")).to_have_count(0)
        assert devices_running(page_or_frame) == []  # camera and microphone off
        audit(page_or_frame, "ended")
    # The server freed the seats itself: had it waited for the pages, it would hold them for the grace
    # period (30 s) after their connections closed.
    assert wait_for_no_rooms(kijkmee) == 0


def test_a_site_the_controller_did_not_allow_cannot_show_the_call(
    kijkmee: Kijkmee, sites: tuple[Site, Site], people: People
) -> None:
    shop_site, other_site = sites
    room = kijkmee.room(embed_origins=[shop_site.origin])
    other = people.open(other_site.page_for(room["id"], timeout="3000"))
    assert wait_event(other, "error") == {"code": "not-loaded"}
    assert [name for name, _ in events(other)] == ["error"]  # never `ready`
    frame = call_frame(other)
    # The browser refused to show our page in that frame (CSP frame-ancestors): no call page in it.
    expect(frame.locator("#prejoin")).to_have_count(0)
    assert frame.evaluate("typeof window.kijkmee") == "undefined"
    assert other.evaluate("document.getElementById('call-status').textContent") == \
        "Something went wrong with the call."


def test_messages_from_anyone_but_the_two_pages_are_ignored(
    kijkmee: Kijkmee, sites: tuple[Site, Site], people: People
) -> None:
    shop_site, other_site = sites
    room = kijkmee.room(embed_origins=[shop_site.origin])
    shop = people.open(shop_site.page_for(room["id"], frame=other_site.origin))
    wait_event(shop, "ready")
    frame = call_frame(shop)
    join(frame)
    wait_event(shop, "joined")
    # Record in the call page every message that reaches it, to know the forged ones arrived.
    frame.evaluate("() => { window.__seen = []; addEventListener('message', (e) => window.__seen.push(e.origin)); }")

    # Two more frames in the shop's page: one of another site, one of the shop's own origin (right
    # origin, wrong window). Both send the call page commands and the shop forged call events.
    forged = """() => {
      const call = parent.frames[0];
      for (const command of ['mute', 'camera-off', 'leave']) {
        call.postMessage({kijkmee: 1, command}, '*');
      }
      parent.postMessage({kijkmee: 1, event: 'ended', data: {}}, '*');
    }"""
    for origin in (other_site.origin, shop_site.origin):
        shop.evaluate("""src => new Promise((resolve) => {
            const f = document.createElement('iframe');
            f.src = src; f.onload = () => resolve(); document.body.append(f);
        })""", f"{origin}/blank.html")
        sender = next(f for f in shop.frames if f.url == f"{origin}/blank.html")
        sender.evaluate(forged)
        frame.wait_for_function("o => window.__seen.filter((x) => x === o).length >= 3", arg=origin)

    # Nothing happened: still in the call, microphone and camera on, and the shop heard of no end.
    assert frame.evaluate("window.kijkmee.state") == "in-call"
    expect(frame.locator("#mute")).to_have_attribute("aria-pressed", "false")
    expect(frame.locator("#camera")).to_have_attribute("aria-pressed", "false")
    assert devices_running(frame) == [("audio", True), ("video", True)]
    assert "ended" not in [name for name, _ in events(shop)]
    # While the shop's page itself is obeyed.
    shop.click("button[data-command='mute']")
    expect(frame.locator("#mute")).to_have_attribute("aria-pressed", "true")
    assert frame.evaluate("window.__seen").count(shop_site.origin) == 4
    shop.click("button[data-command='leave']")
    wait_event(shop, "left")


def test_the_embed_script_is_served_at_a_short_address(kijkmee: Kijkmee) -> None:
    with urllib.request.urlopen(kijkmee.url + "/embed.js", context=kijkmee.ca, timeout=10) as response:
        body = response.read()
        assert response.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert body == (REPO / "client_web" / "js" / "embed.js").read_bytes()

