"""How `kijkmee serve` hands out the browser client's files: from memory, with ETags, gzip when asked.

Plain HTTP checks against the real server; they live with the browser tests because they use the same
`kijkmee serve` fixture and share its namespace run.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import ServeProcess

pytestmark = pytest.mark.netns

CLIENT = Path(__file__).resolve().parents[2] / "client_web"


async def test_static_files_carry_an_etag_and_revalidate_to_304(serve: ServeProcess) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(serve.url + "/static/js/room.js", ssl=False) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/javascript; charset=utf-8"
            assert response.headers["Cache-Control"] == "no-cache"
            etag = response.headers["ETag"]
            assert await response.read() == (CLIENT / "js" / "room.js").read_bytes()
        async with http.get(serve.url + "/static/js/room.js", ssl=False, headers={"If-None-Match": etag}) as response:
            assert response.status == 304
            assert await response.read() == b""
            assert response.headers["ETag"] == etag
            assert "script-src 'self'" in response.headers["Content-Security-Policy"]
            assert response.headers["X-Content-Type-Options"] == "nosniff"
        async with http.get(serve.url + "/static/css/app.css", ssl=False) as response:
            assert response.status == 200 and response.headers["Content-Type"] == "text/css; charset=utf-8"
            assert response.headers["ETag"] != etag


async def test_gzip_only_when_the_browser_asks(serve: ServeProcess) -> None:
    vendor = (CLIENT / "node_modules/socket.io-client/dist/socket.io.esm.min.js").read_bytes()
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        async with http.get(serve.url + "/vendor/socket.io.esm.min.js", ssl=False,
                            headers={"Accept-Encoding": "gzip, deflate, br"}) as response:
            assert response.status == 200
            assert response.headers["Content-Encoding"] == "gzip"
            assert response.headers["Vary"] == "Accept-Encoding"
            assert response.headers["Cache-Control"] == "max-age=3600"
            body = await response.read()
            assert len(body) < len(vendor) // 2 and gzip.decompress(body) == vendor
        for refusal in ("identity", "gzip;q=0", "br"):
            async with http.get(serve.url + "/vendor/socket.io.esm.min.js", ssl=False,
                                headers={"Accept-Encoding": refusal}) as response:
                assert "Content-Encoding" not in response.headers, refusal
                assert await response.read() == vendor


async def test_pages_are_never_stored(serve: ServeProcess) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/", "/r/" + "a" * 22):
            async with http.get(serve.url + path, ssl=False) as response:
                assert response.status == 200, path
                assert response.headers["Content-Type"] == "text/html; charset=utf-8"
                assert response.headers["Cache-Control"] == "no-store"


async def test_the_call_page_carries_its_rooms_status(serve: ServeProcess) -> None:
    """The page holds what GET /r/<room>/status answers (so the camera can start without asking first),
    in a <meta> the HTML-escaping keeps intact, gzipped for a browser that asks; an unknown link's page
    says "expired", exactly like its status request."""
    import html
    import json
    import re

    from tests.integration.sio_helpers import create_room

    room = await create_room(serve.url)

    def status_in(page: str) -> object:
        found = re.search(r'<meta name="kijkmee-room" content="([^"]*)">', page)
        assert found is not None
        return json.loads(html.unescape(found.group(1)))

    async with aiohttp.ClientSession() as http:
        for room_id in (room, "A" * 22):
            async with http.get(f"{serve.url}/r/{room_id}", ssl=False,
                                headers={"Accept-Encoding": "gzip"}) as response:
                assert response.status == 200 and response.headers["Content-Encoding"] == "gzip"
                page = await response.text()
            async with http.get(f"{serve.url}/r/{room_id}/status", ssl=False) as response:
                assert status_in(page) == await response.json()
        assert status_in(page) == {"state": "expired"}
    async with aiohttp.ClientSession() as http, http.get(f"{serve.url}/r/{room}", ssl=False) as response:
        state = status_in(await response.text())
        assert isinstance(state, dict) and state["state"] == "open" and state["ask"] == "name"


@pytest.mark.parametrize(
    "path",
    [
        "/static/js/missing.js",
        "/static/js/.hidden",
        "/static/js/..%2Froom.html",
        "/static/js/%2e%2e",
        "/static/node_modules/socket.io-client/package.json",
        "/static/js/",
        "/vendor/socket.io.js",
    ],
)
async def test_nothing_outside_the_client_folders(serve: ServeProcess, path: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(serve.url + path, ssl=False) as response:
            assert response.status == 404, path
