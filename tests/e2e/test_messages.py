"""Plain-language messages a person meets, in Dutch and English, in Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect

from tests.e2e.conftest import People, ServeProcess, launch_chromium, start_serve, stop_serve
from tests.e2e.test_browser_call import join, start_call, wait_state

pytestmark = pytest.mark.netns

@pytest.fixture(scope="module")
def browsers(playwright: Playwright) -> Iterator[tuple[Browser, Browser]]:
    allowing = launch_chromium(playwright)
    # The same browser, except that nobody answers the permission prompt: headless Chromium then denies.
    denying = launch_chromium(playwright, drop_args=["--use-fake-ui-for-media-stream"])
    yield allowing, denying
    allowing.close()
    denying.close()


@pytest.fixture
def people(browsers: tuple[Browser, Browser]) -> Iterator[People]:
    with People(browsers[0]) as crowd:
        yield crowd


def message(page: Page, code: str) -> str:
    box = page.locator("#message")
    expect(box).to_have_attribute("data-code", code)
    expect(box).to_be_visible()
    return box.inner_text()


def failing_get_user_media(error_name: str) -> str:
    """An init script: the browser reports `error_name` for every device, as a real failure would."""
    return (
        "navigator.mediaDevices.getUserMedia = () => "
        f"Promise.reject(new DOMException('test', '{error_name}'));"
    )


def test_permission_denied_is_explained_in_dutch_and_the_call_still_works(
    serve: ServeProcess, browsers: tuple[Browser, Browser], people: People
) -> None:
    host = people.open(serve.url)
    url = start_call(host, serve.url)
    host.goto(url)
    join(host, "Host")
    wait_state(host, "in-call")

    context = browsers[1].new_context(ignore_https_errors=True, locale="nl-NL")
    try:
        guest = context.new_page()
        guest.goto(url)
        text = message(guest, "permission-denied")
        assert "Toestaan" in text and "camera" in text
        assert guest.evaluate("document.documentElement.lang") == "nl"
        join(guest, "Gast zonder camera")
        wait_state(guest, "in-call")
        # Receive-only: the guest still sees the host's tile and the host sees the guest's.
        expect(guest.locator("#tiles .tile")).to_have_count(2)
        expect(host.locator("#tiles .tile")).to_have_count(2)
        assert guest.url == url, "nothing typed may end up in the address"
    finally:
        context.close()


@pytest.mark.parametrize(
    ("error_name", "code", "words"),
    [
        ("NotReadableError", "device-in-use", "another app"),
        ("NotFoundError", "no-device", "couldn't find a camera"),
        ("OverconstrainedError", "overconstrained", "couldn't be started with the settings"),
    ],
)
def test_device_problems_have_their_own_words(
    serve: ServeProcess, people: People, error_name: str, code: str, words: str
) -> None:
    page = people.open(serve.url)
    url = start_call(page, serve.url)
    page.context.add_init_script(failing_get_user_media(error_name))
    page.goto(url)
    assert words in message(page, code)


def test_no_media_devices_at_all_is_an_insecure_context(serve: ServeProcess, people: People) -> None:
    page = people.open(serve.url)
    url = start_call(page, serve.url)
    page.context.add_init_script("Object.defineProperty(navigator, 'mediaDevices', {value: undefined});")
    page.goto(url)
    assert "https://" in message(page, "insecure-context")


def test_a_link_that_does_not_exist(serve: ServeProcess, people: People) -> None:
    # Unknown, ended and expired links look alike (GET /r/<room>/status): "this link doesn't work any
    # more", before anyone types, and the join form is not offered.
    page = people.open(serve.url + "/r/" + "Z" * 22)
    wait_state(page, "expired")
    expect(page.locator("#expired-title")).to_have_text("This link doesn't work any more")
    assert "link" in page.locator("#expired").inner_text()
    expect(page.locator("#join")).to_be_hidden()
    expect(page.locator("#tiles .tile")).to_have_count(0)


def test_language_switch_is_remembered(serve: ServeProcess, people: People) -> None:
    page = people.open(serve.url)
    expect(page.locator("#start-call")).to_have_text("Start a call")
    page.click("#lang")
    assert page.evaluate("document.documentElement.lang") == "nl"
    start_text = page.locator("#start-call").inner_text()
    assert start_text != "Start a call" and "gesprek" in start_text.lower()
    page.reload()
    expect(page.locator("#start-call")).to_have_text(start_text)


def test_server_unreachable(people: People, tmp_path: Path) -> None:
    server = start_serve(tmp_path / "data")
    try:
        page = people.open(server.url)
        url = start_call(page, server.url)
        page.goto(url)
    finally:
        stop_serve(server)
    join(page)
    text = message(page, "server-unreachable")
    assert "can't reach" in text
    wait_state(page, "error", timeout=30_000)
    expect(page.locator("#join")).to_be_enabled()  # "Try again"
