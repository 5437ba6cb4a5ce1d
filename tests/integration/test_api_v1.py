"""The controller API on a real `kijkmee serve`: keys, room options, and what they do to a call."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
import pytest_asyncio

from kijkmee.config import ServeConfig
from kijkmee.serve import RunningServer, running
from kijkmee.storage import open_store
from metadata_store.service import DataHandling
from signaling.api_v1 import openapi_document
from tests.integration.sio_helpers import Participant

pytestmark = pytest.mark.asyncio(loop_scope="module")

HOST_CANDIDATE = "candidate:1 1 udp 2122260223 192.0.2.44 50000 typ host generation 0"
RELAY_CANDIDATE = "candidate:2 1 udp 41885439 127.0.0.1 50002 typ relay raddr 0.0.0.0 rport 0 generation 0"
SDP = (
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n"
    f"a={HOST_CANDIDATE}\r\na={RELAY_CANDIDATE}\r\n"
)


@dataclass
class Api:
    live: RunningServer
    acme: str
    other: str
    revoked: str
    data_dir: Path

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.acme}"}

    async def call(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> tuple[int, Any]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as client, client.request(
            method, self.live.url + path, headers=self.headers(key), **kwargs
        ) as r:
            body = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    data_dir = tmp_path_factory.mktemp("api") / "data"
    config = ServeConfig(port=0, turn_port=0, turns_port=0, data_dir=data_dir).validate()
    store = await open_store(config)
    try:
        now = dt.datetime.now(dt.UTC)
        service = DataHandling(store)
        for controller in ("acme", "other"):
            await store.ensure_controller(controller, controller.title(), now)
        _, acme = await service.create_api_key("acme", "webshop", "setup")
        _, other = await service.create_api_key("other", "crm", "setup")
        gone, revoked = await service.create_api_key("acme", "old", "setup")
        await store.revoke_api_key(gone.id, "setup", now)
    finally:
        await store.close()
    async with running(config, say=False) as live:
        yield Api(live, acme, other, revoked, data_dir)


async def test_a_room_is_made_read_and_ended_with_the_controllers_key(api: Api) -> None:
    status, room = await api.call("POST", "/api/v1/rooms", json={
        "expires_in_minutes": 90, "capacity": 2, "ask": "phone",
        "embed_origins": ["https://shop.example.nl", "https://shop.example.nl:443", "https://127.0.0.2:8443/"]})
    assert status == 201, room
    document = openapi_document(api.live.url)
    jsonschema.validate(room, {**document["components"]["schemas"]["Room"], "components": document["components"]})
    assert room["url"] == f"{api.live.url}/r/{room['id']}" and len(room["id"]) >= 22
    assert (room["capacity"], room["ask"], room["relay_only"], room["active"]) == (2, "phone", False, True)
    assert room["embed_origins"] == ["https://shop.example.nl", "https://127.0.0.2:8443"]
    lifetime = dt.datetime.fromisoformat(room["expires_at"]) - dt.datetime.fromisoformat(room["created_at"])
    assert lifetime == dt.timedelta(minutes=90)
    assert await api.call("GET", f"/api/v1/rooms/{room['id']}") == (200, room)
    # Another controller's key cannot see or end it: for that key it does not exist.
    assert (await api.call("GET", f"/api/v1/rooms/{room['id']}", key=api.other))[0] == 404
    assert (await api.call("DELETE", f"/api/v1/rooms/{room['id']}", key=api.other))[0] == 404
    assert (await api.call("DELETE", f"/api/v1/rooms/{room['id']}"))[0] == 204
    status, ended = await api.call("GET", f"/api/v1/rooms/{room['id']}")
    assert status == 200 and ended["active"] is False
    person = await Participant().connect(api.live.url)
    try:
        assert (await person.join(room["id"]))["error"] == "room-expired"
    finally:
        await person.close()


async def test_the_rooms_capacity_is_kept_and_leaving_does_not_extend_an_api_link(api: Api) -> None:
    status, room = await api.call("POST", "/api/v1/rooms", json={"capacity": 2, "expires_in_minutes": 30})
    assert status == 201
    people = [await Participant().connect(api.live.url) for _ in range(3)]
    try:
        answers = [await p.join(room["id"]) for p in people]
        assert [a["ok"] for a in answers] == [True, True, False] and answers[2]["error"] == "room-full"
    finally:
        for p in people:
            await p.close()
    await asyncio.sleep(0.2)
    assert (await api.call("GET", f"/api/v1/rooms/{room['id']}"))[1]["expires_at"] == room["expires_at"]


async def test_a_relay_only_room_never_passes_on_an_address_other_than_the_relays(api: Api) -> None:
    status, room = await api.call("POST", "/api/v1/rooms", json={"relay_only": True})
    assert status == 201 and room["relay_only"] is True
    anna, bob = await Participant().connect(api.live.url), await Participant().connect(api.live.url)
    try:
        joined = await anna.join(room["id"])
        assert joined["iceTransportPolicy"] == "relay"
        bob_id = (await bob.join(room["id"]))["self"]
        await anna.call("offer", {"to": bob_id, "sdp": SDP})
        for line in (HOST_CANDIDATE, RELAY_CANDIDATE):
            await anna.call("candidate", {"to": bob_id, "candidate": {"candidate": line, "sdpMid": "0"}})
        [offer] = await bob.wait_for("offer")
        [candidate] = await bob.wait_for("candidate")
        await asyncio.sleep(0.2)
        assert "192.0.2.44" not in offer["sdp"] and RELAY_CANDIDATE in offer["sdp"]
        assert candidate["candidate"]["candidate"] == RELAY_CANDIDATE and len(bob.received("candidate")) == 1
    finally:
        await anna.close()
        await bob.close()


@pytest.mark.parametrize(
    ("body", "message"),
    [({"capacity": 4}, "capacity is 1, 2 or 3"), ({"capacity": "3"}, "capacity"), ({"colour": "red"}, "Unknown field"),
     ({"embed_origins": ["https://shop.example.nl/page"]}, "no path"),
     ({"embed_origins": ["http://shop.example.nl"]}, "https origin"), ({"embed_origins": "https://a.nl"}, "list"),
     ({"expires_in_minutes": 0}, "expires_in_minutes"), ({"ask": "email"}, "ask is one of"),
     ({"relay_only": "yes"}, "true or false")],
)
async def test_bad_room_requests_get_a_sentence_not_a_500(api: Api, body: dict[str, Any], message: str) -> None:
    status, answer = await api.call("POST", "/api/v1/rooms", json=body)
    assert status == 400 and answer["error"] == "bad-request" and message in answer["message"], answer


@pytest.mark.parametrize("raw", [b"{", b"[1, 2]", b"\xff\xfe", b'"text"'])
async def test_a_body_that_is_no_json_object_is_refused(api: Api, raw: bytes) -> None:
    status, answer = await api.call("POST", "/api/v1/rooms", data=raw)
    assert status == 400 and answer["error"] == "bad-request"


async def test_a_huge_body_is_refused(api: Api) -> None:
    status, answer = await api.call("POST", "/api/v1/rooms", data=b"{" + b" " * 40_000 + b"}")
    assert (status, answer["error"]) == (400, "too-large")


@pytest.mark.parametrize("header", ["", "Bearer", "Basic abc", "Bearer kmk_nothing_here", "Bearer not-a-key"])
async def test_without_a_valid_key_nothing_happens(api: Api, header: str) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as client, client.post(
        f"{api.live.url}/api/v1/rooms", headers={"Authorization": header} if header else {}, json={}
    ) as r:
        assert r.status == 401 and (await r.json())["error"] == "unauthorized"


async def test_a_revoked_key_and_a_key_of_an_ended_controller_stop_working(api: Api) -> None:
    assert (await api.call("POST", "/api/v1/rooms", key=api.revoked, json={}))[0] == 401
    store = await open_store(ServeConfig(data_dir=api.data_dir))
    try:
        now = dt.datetime.now(dt.UTC)
        await store.start_offboarding("other", now + dt.timedelta(days=1), "admin", now)
    finally:
        await store.close()
    assert (await api.call("POST", "/api/v1/rooms", key=api.other, json={}))[0] == 401


async def test_the_openapi_document_is_served_without_a_key(api: Api) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as client, client.get(
        f"{api.live.url}/api/v1/openapi.json"
    ) as r:
        document = await r.json()
    assert r.status == 200 and document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {"/api/v1/rooms", "/api/v1/rooms/{room}"}


async def test_only_the_origins_a_controller_named_may_frame_its_call(api: Api) -> None:
    status, room = await api.call("POST", "/api/v1/rooms", json={
        "embed_origins": ["https://shop.example.nl", "https://127.0.0.2:8443"]})
    assert status == 201
    status, plain = await api.call("POST", "/api/v1/rooms", json={})
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as client:
        async with client.get(room["url"]) as r:
            framed = r.headers["Content-Security-Policy"]
        async with client.get(plain["url"]) as r:
            unframed = r.headers["Content-Security-Policy"]
        async with client.get(f"{api.live.url}/") as r:
            home = r.headers["Content-Security-Policy"]
    assert "frame-ancestors https://shop.example.nl https://127.0.0.2:8443" in framed
    assert "frame-ancestors 'none'" in unframed and "frame-ancestors 'none'" in home
    # Everything else in the policy stays as strict as on every other page.
    assert framed.replace("https://shop.example.nl https://127.0.0.2:8443", "'none'") == unframed


async def test_the_call_page_learns_what_to_ask_and_whether_the_link_still_works(api: Api) -> None:
    status, room = await api.call("POST", "/api/v1/rooms", json={"ask": "name+phone", "capacity": 2,
                                                                   "relay_only": True})
    assert status == 201
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as client:
        async def page_status(room_id: str) -> Any:
            async with client.get(f"{api.live.url}/r/{room_id}/status") as r:
                assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
                return await r.json()

        assert await page_status(room["id"]) == {"state": "open", "ask": "name+phone", "capacity": 2,
                                                 "relayOnly": True, "embedOrigins": []}
        assert (await api.call("DELETE", f"/api/v1/rooms/{room['id']}"))[0] == 204
        # An ended, an unknown and a malformed link look the same: nothing about other links leaks.
        assert await page_status(room["id"]) == {"state": "expired"}
        assert await page_status("A" * 22) == {"state": "expired"}
        assert await page_status("not a room") == {"state": "expired"}


async def test_ending_a_room_during_a_call_tells_everyone_and_frees_their_seats(api: Api) -> None:
    status, room = await api.call("POST", "/api/v1/rooms", json={"capacity": 2,
                                                                   "embed_origins": ["https://shop.example.nl"]})
    assert status == 201
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as client, client.get(
        f"{api.live.url}/r/{room['id']}/status"
    ) as r:
        assert (await r.json())["embedOrigins"] == ["https://shop.example.nl"]
    anna, bob = await Participant().connect(api.live.url), await Participant().connect(api.live.url)
    try:
        assert (await anna.join(room["id"]))["ok"] and (await bob.join(room["id"]))["ok"]
        assert (await api.call("DELETE", f"/api/v1/rooms/{room['id']}"))[0] == 204
        for person in (anna, bob):
            assert await person.wait_for("room-ended") == [{}]
        # The seats are free already (not when the pages go), and the link takes nobody new.
        assert (await anna.call("leave", {}))["error"] == "not-joined"
        assert (await bob.call("offer", {"to": "x" * 16, "sdp": SDP}))["error"] == "not-joined"
        carla = await Participant().connect(api.live.url)
        try:
            assert (await carla.join(room["id"]))["error"] == "room-expired"
        finally:
            await carla.close()
    finally:
        await anna.close()
        await bob.close()
