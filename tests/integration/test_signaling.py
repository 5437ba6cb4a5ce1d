"""Signaling against a real server on loopback with python-socketio clients."""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from kijkmee.config import ServeConfig
from kijkmee.serve import running
from tests import stored
from tests.conftest import Server
from tests.integration.sio_helpers import Participant, create_room

SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"

Connect = Callable[..., Awaitable[Participant]]


@pytest.fixture
async def connect(server: Server) -> AsyncIterator[Connect]:
    made: list[Participant] = []

    async def make(transport: str = "websocket") -> Participant:
        participant = await Participant().connect(server.url, transport)
        made.append(participant)
        return participant

    yield make
    for participant in made:
        await participant.close()


def session_rows(server: Server) -> list[tuple[object, ...]]:
    return stored.session_rows(server.data_dir)


async def test_three_join_and_see_each_other(server: Server, connect: Connect) -> None:
    room = await create_room(server.url)
    alice, bob, carol = [await connect() for _ in range(3)]
    a = await alice.join(room, "Alice")
    assert a["ok"] and a["peers"] == [] and a["iceTransportPolicy"] == "all"
    b = await bob.join(room)
    assert b["peers"] == [{"id": a["self"], "name": "Alice"}]
    c = await carol.join(room, "  Carol\u0000\u202e ")
    assert [p["id"] for p in c["peers"]] == [a["self"], b["self"]]
    joined = await alice.wait_for("peer-joined", 2)
    assert joined == [{"id": b["self"], "name": None}, {"id": c["self"], "name": "Carol"}]
    assert len({a["self"], b["self"], c["self"]}) == 3


async def test_join_hands_out_our_own_relay_with_fresh_credentials(server: Server, connect: Connect) -> None:
    room = await create_room(server.url)
    first, second = await connect(), await connect()
    a, b = await first.join(room), await second.join(room)
    (ice,) = a["iceServers"]
    assert all(re.fullmatch(r"turns?:127\.0\.0\.1:\d+\?transport=(udp|tcp)", url) for url in ice["urls"]), ice
    assert [url.split(":")[0] + url.rsplit("=", 1)[1] for url in ice["urls"]] == ["turnudp", "turntcp", "turnstcp"]
    expiry, user = ice["username"].split(":")
    assert user == a["self"] and 3.9 * 3600 < int(expiry) - time.time() <= 4 * 3600
    secret = (server.data_dir / "turn-secret").read_text().strip().encode()
    # coturn's use-auth-secret scheme: password = base64(HMAC-SHA1(secret, username)).
    assert ice["credential"] == base64.b64encode(hmac.new(secret, ice["username"].encode(), "sha1").digest()).decode()
    assert b["iceServers"][0]["username"] != ice["username"]


async def test_ten_simultaneous_joins_admit_exactly_three(server: Server, connect: Connect) -> None:
    room = await create_room(server.url)
    clients = [await connect(transport="polling" if i % 2 else "websocket") for i in range(10)]
    results = await asyncio.gather(*(client.join(room) for client in clients))
    admitted = [r for r in results if r["ok"]]
    refused = [r for r in results if not r["ok"]]
    assert len(admitted) == 3
    assert {r["error"] for r in refused} == {"room-full"}
    assert all("three" in r["message"] or "most people" in r["message"] for r in refused)
    assert len(session_rows(server)) == 3


async def test_leave_frees_the_seat_and_tells_the_others(server: Server, connect: Connect) -> None:
    room = await create_room(server.url)
    first, second, third, fourth = [await connect() for _ in range(4)]
    for client in (first, second, third):
        assert (await client.join(room))["ok"]
    assert (await fourth.join(room))["error"] == "room-full"
    second_id = next(p["id"] for p in (await first.wait_for("peer-joined", 2)))
    assert (await second.call("leave", {})) == {"ok": True}
    assert (await first.wait_for("peer-left")) == [{"id": second_id}]
    assert (await third.wait_for("peer-left")) == [{"id": second_id}]
    retry = await fourth.join(room)
    assert retry["ok"] and len(retry["peers"]) == 2


async def test_disconnect_frees_the_seat_and_closes_the_session_row(server: Server, connect: Connect) -> None:
    room = await create_room(server.url)
    stay, go = await connect(), await connect()
    await stay.join(room, "Stay")
    gone = await go.join(room)
    await go.close()
    assert (await stay.wait_for("peer-left")) == [{"id": gone["self"]}]
    rows = session_rows(server)
    assert rows == [(room, "127.0.0.1", "Stay", 0), (room, "127.0.0.1", None, 1)]


async def test_signals_reach_only_the_named_peer_of_the_same_room(server: Server, connect: Connect) -> None:
    room, other_room = await create_room(server.url), await create_room(server.url)
    alice, bob, carol, mallory = [await connect() for _ in range(4)]
    a = await alice.join(room)
    b = await bob.join(room)
    await carol.join(room)
    m = await mallory.join(other_room)

    assert (await alice.call("offer", {"to": b["self"], "sdp": SDP, "extra": "dropped"}))["ok"]
    offers = await bob.wait_for("offer")
    assert offers == [{"from": a["self"], "sdp": SDP}]
    candidate = {"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host", "sdpMid": "0",
                 "sdpMLineIndex": 0, "usernameFragment": "abcd", "secret": "not forwarded"}
    assert (await bob.call("candidate", {"to": a["self"], "candidate": candidate}))["ok"]
    got = await alice.wait_for("candidate")
    assert got == [{"from": b["self"], "candidate": {k: candidate[k] for k in
                                                     ("candidate", "sdpMid", "sdpMLineIndex", "usernameFragment")}}]
    assert (await bob.call("answer", {"to": a["self"], "sdp": SDP}))["ok"]
    await alice.wait_for("answer")

    refused = await mallory.call("offer", {"to": a["self"], "sdp": SDP})
    assert refused == {"ok": False, "error": "unknown-peer", "message": "That participant is not in your call."}
    errors = await mallory.wait_for("signal-error")
    assert errors[0]["error"] == "unknown-peer" and errors[0]["event"] == "offer"
    self_offer = await alice.call("offer", {"to": a["self"], "sdp": SDP})
    assert self_offer["error"] == "unknown-peer"
    await asyncio.sleep(0.2)
    assert alice.received("offer") == [] and carol.received("offer") == []
    assert m["peers"] == []


async def test_signaling_before_join_is_refused(server: Server, connect: Connect) -> None:
    lurker = await connect()
    reply = await lurker.call("offer", {"to": "abcdefghijkl", "sdp": SDP})
    assert reply["error"] == "not-joined"


@pytest.mark.parametrize(
    ("event", "payload", "error"),
    [
        ("join", {"room": "short"}, "bad-request"),
        ("join", {"room": "x" * 22, "name": 42}, "bad-request"),
        ("join", {"room": "x" * 22, "name": "n" * 65}, "bad-request"),
        ("join", "not an object", "bad-request"),
        ("join", None, "bad-request"),
        ("join", {"room": "A" * 22}, "room-expired"),
        ("hello", {}, "unknown-event"),
    ],
)
async def test_malformed_requests_get_a_clear_refusal(
    server: Server, connect: Connect, event: str, payload: object, error: str
) -> None:
    client = await connect()
    reply = await client.call(event, payload)
    assert reply["ok"] is False and reply["error"] == error and reply["message"]
    assert (await client.wait_for("signal-error"))[0]["error"] == error
    assert session_rows(server) == []


async def test_oversized_and_malformed_signals_do_not_crash_the_server(server: Server, connect: Connect) -> None:
    room = await create_room(server.url)
    alice, bob = await connect(), await connect()
    await alice.join(room)
    b = await bob.join(room)
    too_big = await alice.call("offer", {"to": b["self"], "sdp": "a" * (64 * 1024 + 1)})
    assert too_big["error"] == "bad-request" and "65536" in too_big["message"]
    for bad in ({"to": b["self"]}, {"to": 5, "sdp": SDP}, {"to": b["self"], "candidate": "x"},
                {"to": b["self"], "candidate": {"candidate": "c", "sdpMLineIndex": -1}}, []):
        event = "candidate" if isinstance(bad, dict) and "candidate" in bad else "offer"
        assert (await alice.call(event, bad))["error"] == "bad-request"
    # Larger than the Socket.IO message cap: the server drops that connection, and only that one.
    with pytest.raises(Exception):  # noqa: B017 - the client sees a timeout or a disconnect, both fine
        await alice.call("offer", {"to": b["self"], "sdp": "a" * 200_000}, timeout=3)
    assert (await bob.wait_for("peer-left"))
    fresh = await connect()
    assert (await fresh.join(room))["ok"]
    assert bob.received("offer") == []


async def test_message_rate_is_limited_per_connection(server: Server, connect: Connect) -> None:
    room = await create_room(server.url)
    alice, bob = await connect(), await connect()
    await alice.join(room)
    b = await bob.join(room)
    replies = await asyncio.gather(
        *(alice.call("candidate", {"to": b["self"], "candidate": None}) for _ in range(300))
    )
    limited = [r for r in replies if not r["ok"]]
    assert limited and {r["error"] for r in limited} == {"rate-limited"}
    assert 100 <= sum(r["ok"] for r in replies) < 300
    # Another connection is not slowed down by alice's flood.
    assert (await bob.call("candidate", {"to": b["peers"][0]["id"], "candidate": None}))["ok"]


async def test_joining_twice_on_one_connection_is_refused(server: Server, connect: Connect) -> None:
    room = await create_room(server.url)
    client = await connect()
    assert (await client.join(room))["ok"]
    assert (await client.join(room))["error"] == "already-joined"
    assert len(session_rows(server)) == 1


async def test_a_failing_store_gives_a_clear_error_and_logs_no_personal_data(
    server: Server, connect: Connect, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from metadata_store.sqlite import SQLiteStore

    async def broken(self: SQLiteStore, room_id: str, ip: str, name: str | None, now: object, **typed: object) -> int:
        raise RuntimeError(f"disk full while writing {name} from {ip}")

    monkeypatch.setattr(SQLiteStore, "open_session", broken)
    room = await create_room(server.url)
    client = await connect()
    with caplog.at_level("DEBUG"):
        reply = await client.join(room, "Geheime Naam")
    assert reply == {"ok": False, "error": "internal", "message": "Something went wrong on the server."}
    record = next(r for r in caplog.records if r.name == "kijkmee.signaling")
    assert record.error == "RuntimeError" and record.where.startswith("test_signaling.py:")  # type: ignore[attr-defined]
    text = "\n".join(r.getMessage() + str(vars(r)) for r in caplog.records)
    assert "Geheime Naam" not in text and "127.0.0.1" not in text
    # The seat was given back: three others can still join.
    others = [await connect() for _ in range(3)]
    monkeypatch.undo()
    assert all([(await other.join(room))["ok"] for other in others])


async def test_the_websocket_is_not_compressed_even_when_the_browser_offers_it(server: Server) -> None:
    """Browsers offer permessage-deflate on every WebSocket. Signaling declines it: one deflate context
    per connection would hold relay credentials beside names other people typed (the CRIME/BREACH
    pattern), and cost each connection a compressor (signaling/sio_manager.py)."""
    url = f"{server.url}/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, ssl=False, compress=15) as ws:  # offers permessage-deflate
            assert ws.compress == 0
            opened = await ws.receive_str(timeout=5)  # Engine.IO's open packet: the session works
            assert opened.startswith('0{"sid":')
            await ws.send_str("40")  # Socket.IO connect
            assert (await ws.receive_str(timeout=5)).startswith('40{"sid":')


async def test_frames_that_are_not_json_are_dropped_and_the_connection_goes_on(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """Socket.IO frames whose JSON is broken or not strict (NaN) are malformed input: dropped, logged
    once per connection without their content, and the same connection is still served."""
    url = f"{server.url}/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as session, session.ws_connect(url, ssl=False) as ws:
        assert (await ws.receive_str(timeout=5)).startswith("0{")
        await ws.send_str("40")
        assert (await ws.receive_str(timeout=5)).startswith("40{")
        for frame in ('421["join",{"room":', '422["join",{"room":NaN}]', '423["join","\\udc00"]'):
            await ws.send_str(frame)
        await ws.send_str('424["join",{"room":"' + "A" * 22 + '"}]')
        frames = [await ws.receive_str(timeout=5)]
        while not frames[-1].startswith("43"):  # the ack; before it a signal-error event (and maybe a ping)
            frames.append(await ws.receive_str(timeout=5))
        assert frames[-1].startswith('434[{"ok":false,"error":"room-expired"'), frames
        assert [f for f in frames if f.startswith("42")] == [
            '42["signal-error",{"error":"room-expired","event":"join",'
            '"message":"This call link has expired or does not exist."}]']  # for the valid frame only
    assert session_rows(server) == []
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warned] == ["dropped a malformed Socket.IO frame"]
    assert "NaN" not in caplog.text and "udc00" not in caplog.text and not any(r.exc_info for r in warned)


async def test_a_connection_upgraded_from_long_polling_works_both_ways(server: Server, connect: Connect) -> None:
    """A browser whose WebSocket was blocked at first starts on long-polling and upgrades later: that
    connection keeps python-engineio's own path (queue and writer task), the others write directly."""
    room = await create_room(server.url)
    upgraded = Participant()
    await upgraded.sio.connect(server.url, transports=["polling", "websocket"], wait_timeout=10)
    try:
        for _ in range(200):
            if upgraded.sio.eio.current_transport == "websocket":
                break
            await asyncio.sleep(0.05)
        assert upgraded.sio.eio.current_transport == "websocket"
        other = await connect()
        a, b = await upgraded.join(room, "Up"), await other.join(room)
        assert (await upgraded.wait_for("peer-joined"))[0]["id"] == b["self"]
        assert (await other.call("offer", {"to": a["self"], "sdp": SDP}))["ok"]
        assert (await upgraded.wait_for("offer"))[0] == {"from": b["self"], "sdp": SDP}
        assert (await upgraded.call("answer", {"to": b["self"], "sdp": SDP}))["ok"]
        assert (await other.wait_for("answer"))[0] == {"from": a["self"], "sdp": SDP}
    finally:
        await upgraded.close()


@pytest.fixture
async def quick_ping_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Server]:
    """A server that pings every second and gives a pong one second."""
    monkeypatch.setattr("signaling.app.PING_INTERVAL_SECONDS", 1)
    monkeypatch.setattr("signaling.app.PING_TIMEOUT_SECONDS", 1)
    config = ServeConfig(port=0, turn_port=0, turns_port=0, data_dir=tmp_path / "data", seat_grace_seconds=0).validate()
    async with running(config, say=False) as live:
        yield Server(url=live.url, port=live.port, data_dir=config.data_dir)


async def test_a_connection_that_goes_silent_is_closed_and_its_seat_freed(quick_ping_server: Server) -> None:
    """A WebSocket whose other end stopped answering (a phone that lost its network) is read without a
    timeout: the ping monitor must notice the missing pong, send CLOSE and close it, and free the seat."""
    server = quick_ping_server
    room = await create_room(server.url)
    other = await Participant().connect(server.url)
    try:
        b = await other.join(room)
        url = f"{server.url}/socket.io/?EIO=4&transport=websocket"
        async with aiohttp.ClientSession() as session, session.ws_connect(url, ssl=False) as ws:
            assert (await ws.receive_str(timeout=5)).startswith("0{")
            await ws.send_str("40")
            assert (await ws.receive_str(timeout=5)).startswith("40{")
            await ws.send_str('420["join",{"room":"' + room + '"}]')
            frames: list[str] = []
            async with asyncio.timeout(15):
                async for message in ws:  # never answers a ping ("2") with a pong ("3")
                    if message.type == aiohttp.WSMsgType.TEXT:
                        frames.append(message.data)
            assert ws.closed
        assert any(f.startswith("430[{\"ok\":true") for f in frames), frames
        assert "2" in frames and frames[-1] == "1", frames  # pinged, then Engine.IO's CLOSE
        left = await other.wait_for("peer-left")
        assert left[0]["id"] != b["self"]
    finally:
        await other.close()
