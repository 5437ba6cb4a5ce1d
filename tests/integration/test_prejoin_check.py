"""GET /r/<room>/check on a real `kijkmee serve`: relay URLs with throwaway credentials for the call page's
network check, only for links that work, limited per address, and nothing stored."""

from __future__ import annotations

import base64
import hmac
import re
import time
from typing import Any

import aiohttp

from signaling.http import RELAY_CHECK_BURST, RELAY_CHECK_CREDENTIAL_SECONDS
from tests import stored
from tests.conftest import Server
from tests.integration.sio_helpers import create_room


async def check(http: aiohttp.ClientSession, server: Server, room: str) -> tuple[int, dict[str, str], Any]:
    async with http.get(f"{server.url}/r/{room}/check", ssl=False) as response:
        return response.status, dict(response.headers), await response.json()


async def test_an_open_room_gets_our_relay_with_credentials_for_nobody_in_particular(server: Server) -> None:
    room = await create_room(server.url)
    async with aiohttp.ClientSession() as http:
        status, headers, body = await check(http, server, room)
        _, _, again = await check(http, server, room)
    assert status == 200 and headers["Cache-Control"] == "no-store"
    (ice,) = body["iceServers"]
    assert [url.split(":")[0] + url.rsplit("=", 1)[1] for url in ice["urls"]] == ["turnudp", "turntcp", "turnstcp"]
    assert all(re.fullmatch(r"turns?:127\.0\.0\.1:\d+\?transport=(udp|tcp)", url) for url in ice["urls"]), ice
    # The TURN REST user name is "<expiry>:<who>": here a random throwaway name, fresh each time.
    expiry, user = ice["username"].split(":")
    assert re.fullmatch(r"check-[A-Za-z0-9_-]{16}", user)
    # Minutes, not the hours a join's credentials last: a check takes seconds, and anyone can fetch these.
    assert time.time() < int(expiry) <= time.time() + RELAY_CHECK_CREDENTIAL_SECONDS
    assert again["iceServers"][0]["username"].split(":")[1] != user
    secret = (server.data_dir / "turn-secret").read_text().strip().encode()
    assert ice["credential"] == base64.b64encode(hmac.new(secret, ice["username"].encode(), "sha1").digest()).decode()
    # Checking is not joining: no session row, nothing about the visitor written down.
    assert stored.session_rows(server.data_dir) == []


async def test_unknown_malformed_and_ended_links_answer_alike(server: Server) -> None:
    async with aiohttp.ClientSession() as http:
        for room in ("A" * 22, "not-a-room", "x" * 100):
            status, headers, body = await check(http, server, room)
            assert (status, body, headers["Cache-Control"]) == (404, {"state": "expired"}, "no-store"), room


async def test_one_address_gets_a_burst_of_checks_then_429(server: Server) -> None:
    room = await create_room(server.url)
    async with aiohttp.ClientSession() as http:
        answers = [(await check(http, server, room))[0] for _ in range(RELAY_CHECK_BURST + 1)]
        status, headers, body = await check(http, server, room)
    assert answers[:RELAY_CHECK_BURST] == [200] * RELAY_CHECK_BURST
    assert answers[RELAY_CHECK_BURST] == 429
    assert (status, body, headers["Cache-Control"]) == (429, {"error": "rate-limited"}, "no-store")
