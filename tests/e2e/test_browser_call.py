"""A real three-person call in Debian's Chromium, driven by Playwright, against `kijkmee serve`."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests import stored
from tests.e2e.conftest import ARTIFACTS, PEER_STATS_JS, People, ServeProcess, publish_screenshot

pytestmark = pytest.mark.netns


def start_call(page: Page, base_url: str) -> str:
    page.goto(base_url + "/")
    page.click("#start-call")
    link = page.locator("#room-link")
    expect(link).to_be_visible()
    url = link.get_attribute("href")
    assert url and url.startswith(base_url + "/r/")
    assert page.locator("#room-url").input_value() == url
    return url


def join(page: Page, name: str | None = None) -> None:
    expect(page.locator("#join")).to_be_enabled()
    if name is not None:
        page.fill("#name", name)
    page.click("#join")


def wait_state(page: Page, state: str, timeout: float = 15_000) -> None:
    page.wait_for_function("s => window.kijkmee && window.kijkmee.state === s", arg=state, timeout=timeout)


def peer_stats(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(PEER_STATS_JS)
    return result


def wait_for_media_from(page: Page, count: int, timeout: float = 20.0) -> dict[str, Any]:
    """Wait until `count` peers each deliver decoded video and audio; return the stats."""
    deadline = time.monotonic() + timeout
    stats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stats = peer_stats(page)
        ready = [s for s in stats.values() if s["frames"] > 0 and s["audioSamples"] > 0]
        if len(stats) == count and len(ready) == count:
            return stats
        time.sleep(0.25)
    raise AssertionError(f"media from {count} peers not flowing: {json.dumps(stats)}")


def assert_media_rising(page: Page, before: dict[str, Any]) -> None:
    time.sleep(1.5)
    after = peer_stats(page)
    for peer_id, old in before.items():
        assert after[peer_id]["frames"] > old["frames"], (peer_id, old, after[peer_id])
        assert after[peer_id]["audioSamples"] > old["audioSamples"], (peer_id, old, after[peer_id])


def test_three_people_call_a_fourth_is_turned_away_and_a_leave_frees_the_seat(
    serve: ServeProcess, people: People
) -> None:
    anna = people.open(serve.url)
    url = start_call(anna, serve.url)
    anna.goto(url)
    join(anna, "Anna")
    wait_state(anna, "in-call")
    bram, carla = people.open(url), people.open(url)
    join(bram)
    join(carla, "Carla")

    for page in (anna, bram, carla):
        wait_state(page, "in-call")
        stats = wait_for_media_from(page, 2)
        for peer in stats.values():
            assert peer["connection"] == "connected"
            assert peer["route"]["local"] == "host" and peer["route"]["remote"] == "host"  # direct, peer to peer
            assert peer["route"]["dtls"] == "connected"
        assert_media_rising(page, stats)
        expect(page.locator("#tiles .tile")).to_have_count(3)
    expect(bram.locator(".tile:not(.self)")).to_contain_text(["Anna", "Carla"])

    ARTIFACTS.mkdir(exist_ok=True)
    anna.screenshot(path=str(ARTIFACTS / "call-3way.png"))
    publish_screenshot(ARTIFACTS / "call-3way.png")  # the README's picture

    # A fourth person, with a Dutch browser, gets a clear "this call is full" view in Dutch and no seat.
    dirk = people.open(url, locale="nl-NL")
    join(dirk)
    wait_state(dirk, "full")
    expect(dirk.locator("#full")).to_be_visible()
    expect(dirk.locator("#full-title")).to_have_text("Dit gesprek is vol")
    expect(dirk.locator("#full-retry")).to_be_visible()  # the next step: try again later
    expect(anna.locator("#tiles .tile")).to_have_count(3)

    # Bram leaves: the others see two tiles, and Dirk can now join and is seen by everyone.
    bram.click("#leave")
    wait_state(bram, "left")
    expect(anna.locator("#tiles .tile")).to_have_count(2)
    expect(carla.locator("#tiles .tile")).to_have_count(2)
    dirk.goto(url)
    join(dirk, "Dirk")
    wait_state(dirk, "in-call")
    wait_for_media_from(dirk, 2)
    for page in (anna, carla):
        wait_for_media_from(page, 2)
        expect(page.locator("#tiles .tile")).to_have_count(3)

    for page in (anna, carla, dirk):
        page.click("#leave")
        wait_state(page, "left")

    # The store holds exactly one closed session row per admitted join: room, IP, times, typed name
    # (encrypted at rest; read back with the default controller's key).
    # (A page shows "left" at once; the server closes the row when the leave reaches it, so allow it
    # that moment.)
    room_id = url.rsplit("/", 1)[1]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = stored.session_rows(serve.data_dir)
        if len(rows) == 4 and all(closed for *_, closed in rows):
            break
        time.sleep(0.1)
    assert rows == [
        (room_id, "127.0.0.1", "Anna", 1),
        (room_id, "127.0.0.1", None, 1),
        (room_id, "127.0.0.1", "Carla", 1),
        (room_id, "127.0.0.1", "Dirk", 1),
    ]
    # Each browser reported its set-up (telemetry without personal data): direct, with a time; and the
    # server noted the call size.
    telemetry = stored.session_telemetry(serve.data_dir)
    assert [(route, participants) for route, _, participants in telemetry] == [("direct", 3)] * 4, telemetry
    assert all(isinstance(ms, int) and 0 < ms < 60_000 for _, ms, _ in telemetry), telemetry
    # And the server's log holds none of it.
    logs = serve.logs()
    assert '"route": "/r/{room}"' in logs  # the access log is on, and writes route templates only
    for secret in ("127.0.0.1", "Anna", "Carla", "Dirk", room_id, "Mozilla", "a=fingerprint"):
        assert secret not in logs


def test_a_duplicated_tab_does_not_take_the_seat_of_the_tab_it_copies(serve: ServeProcess, people: People) -> None:
    """A duplicated tab starts with a copy of the original's sessionStorage, rejoin token included. It
    must not use it (that would throw the original out of the call): it waits on the pre-join screen,
    and "Join" makes it a new participant beside the original."""
    first = people.open(serve.url)
    url = start_call(first, serve.url)
    room = url.rsplit("/", 1)[1]
    first.goto(url)
    join(first)
    wait_state(first, "in-call")
    first_id = first.evaluate("window.kijkmee.selfId")
    key = f"kijkmee.rejoin.{room}"
    token = first.evaluate("k => sessionStorage.getItem(k)", key)
    assert isinstance(token, str) and token

    twin = first.context.new_page()  # same browser profile, as a duplicated tab is
    twin.add_init_script(f"sessionStorage.setItem({json.dumps(key)}, {json.dumps(token)})")
    twin.goto(url)
    twin.wait_for_function("() => window.kijkmee !== undefined")
    time.sleep(1.5)  # a page that takes its seat back does so at once: give it time to (wrongly) try
    assert twin.evaluate("window.kijkmee.state") == "prejoin"
    assert twin.evaluate("k => sessionStorage.getItem(k)", key) is None  # not its token: forgotten
    assert first.evaluate("window.kijkmee.state") == "in-call"
    assert first.evaluate("window.kijkmee.selfId") == first_id

    join(twin)
    wait_state(twin, "in-call")
    assert twin.evaluate("window.kijkmee.selfId") not in (None, first_id)
    for page in (first, twin):
        expect(page.locator("#tiles .tile")).to_have_count(2)
    assert first.evaluate("window.kijkmee.selfId") == first_id
