"""An aiortc participant joins a browser call through our signaling and exchanges media both ways."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aioice.ice
import pytest
from playwright.async_api import Browser, async_playwright, expect

from tests.e2e.aiortc_peer import AiortcParticipant
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, PEER_STATS_JS, ServeProcess
from tests.integration.sio_helpers import create_room

pytestmark = pytest.mark.netns


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice skips 127.0.0.1 when gathering; in a loopback-only namespace that is the only address."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else [])


async def test_aiortc_and_chromium_exchange_media(serve: ServeProcess, browser: Browser, loopback_ice: None) -> None:
    room = await create_room(serve.url)
    context = await browser.new_context(ignore_https_errors=True, locale="en-GB")
    page = await context.new_page()
    robot = AiortcParticipant()
    try:
        await page.goto(f"{serve.url}/r/{room}")
        await expect(page.locator("#join")).to_be_enabled()
        await page.click("#join")
        await page.wait_for_function("() => window.kijkmee.state === 'in-call'")
        reply = await robot.join(serve.url, room, "Robot")
        assert reply["ok"], reply
        browser_id = reply["peers"][0]["id"]

        stats: dict[str, Any] = {}
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            stats = await page.evaluate(PEER_STATS_JS)
            if stats.get(reply["self"], {}).get("frames", 0) > 5 and robot.frames.get(browser_id, 0) > 5:
                break
            await asyncio.sleep(0.25)
        mine = stats[reply["self"]]
        assert mine["connection"] == "connected" and mine["route"]["dtls"] == "connected", stats
        assert mine["frames"] > 5 and mine["audioSamples"] > 0, stats
        assert robot.pcs[browser_id].connectionState == "connected"
        assert robot.dtls_states(browser_id) == {"connected"}  # DTLS-SRTP up on the aiortc side too
        assert robot.frames[browser_id] > 5 and robot.audio_frames.get(browser_id, 0) > 5
        await expect(page.locator(f'.tile[data-peer-id="{reply["self"]}"]')).to_contain_text("Robot")
    finally:
        await robot.close()
        await context.close()
