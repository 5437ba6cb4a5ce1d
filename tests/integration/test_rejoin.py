"""A seat is held after an unexpected disconnect, and the same person takes it back with the token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kijkmee.config import ServeConfig
from kijkmee.serve import running
from tests import stored
from tests.conftest import Server, _server
from tests.integration.sio_helpers import Participant, create_room

GRACE = 1.5


@pytest.fixture
async def held(tmp_path: Path) -> AsyncIterator[Server]:
    config = ServeConfig(port=0, turn_port=0, turns_port=0, data_dir=tmp_path / "data",
                         seat_grace_seconds=GRACE).validate()
    async with running(config, say=False) as live:
        yield _server(live, config)


async def rejoin(server: Server, room: str, token: str) -> tuple[Participant, dict[str, object]]:
    person = await Participant().connect(server.url)
    answer: dict[str, object] = await person.call("join", {"room": room, "rejoin": token})
    return person, answer


async def test_a_dropped_participant_takes_back_the_same_seat_and_session(held: Server) -> None:
    room = await create_room(held.url)
    anna, bob = await Participant().connect(held.url), await Participant().connect(held.url)
    first = await anna.join(room, "Anna")
    second = await bob.join(room, "Bob")
    await anna.sio.eio.disconnect(abort=True)  # the network went away: no leave
    assert await bob.wait_for("peer-away") == [{"id": first["self"]}]
    again, answer = await rejoin(held, room, str(first["rejoinToken"]))
    try:
        assert answer["ok"] and answer["self"] == first["self"] and answer["rejoined"] is True
        assert answer["rejoinToken"] != first["rejoinToken"]  # each token works once
        assert await bob.wait_for("peer-back") == [{"id": first["self"], "name": "Anna"}]
        await asyncio.sleep(GRACE + 0.5)
        assert bob.received("peer-left") == []  # the grace period's end does not free a taken-back seat
        rows = stored.session_rows(held.data_dir)
        assert rows == [(room, "127.0.0.1", "Anna", 0), (room, "127.0.0.1", "Bob", 0)]  # one row each, still open
        # Signaling works again both ways under the same peer id.
        assert (await bob.call("offer", {"to": first["self"], "sdp": "v=0\r\n"}))["ok"]
        assert (await again.wait_for("offer"))[0]["from"] == second["self"]
    finally:
        await again.close()
        await bob.close()


async def test_a_seat_not_taken_back_is_freed_when_the_grace_period_ends(held: Server) -> None:
    room = await create_room(held.url)
    people = [await Participant().connect(held.url) for _ in range(3)]
    answers = [await p.join(room, name) for p, name in zip(people, ("Anna", "Bob", "Carla"), strict=True)]
    await people[0].sio.eio.disconnect(abort=True)
    dirk = await Participant().connect(held.url)
    try:
        assert (await dirk.join(room, "Dirk"))["error"] == "room-full"  # the seat is still Anna's
        assert await people[1].wait_for("peer-left", timeout=GRACE + 5) == [{"id": answers[0]["self"]}]
        assert stored.session_rows(held.data_dir)[0] == (room, "127.0.0.1", "Anna", 1)  # closed at the end
        assert (await dirk.join(room, "Dirk"))["ok"]
        late, answer = await rejoin(held, room, str(answers[0]["rejoinToken"]))
        await late.close()
        assert answer["ok"] is False and answer["error"] == "room-full"  # too late: an ordinary join, and full
    finally:
        for p in (*people[1:], dirk):
            await p.close()


async def test_a_leave_frees_the_seat_at_once_and_its_token_is_worthless(held: Server) -> None:
    room = await create_room(held.url)
    anna, bob = await Participant().connect(held.url), await Participant().connect(held.url)
    first = await anna.join(room, "Anna")
    await bob.join(room)
    await anna.call("leave", {})
    assert await bob.wait_for("peer-left") == [{"id": first["self"]}]
    await anna.close()
    again, answer = await rejoin(held, room, str(first["rejoinToken"]))
    try:
        assert answer["ok"] and answer["self"] != first["self"] and "rejoined" not in answer  # a new seat
    finally:
        await again.close()
        await bob.close()


async def test_a_token_only_works_for_its_own_room_and_a_malformed_one_is_refused(held: Server) -> None:
    room, other_room = await create_room(held.url), await create_room(held.url)
    anna = await Participant().connect(held.url)
    first = await anna.join(room, "Anna")
    await anna.sio.eio.disconnect(abort=True)
    elsewhere, answer = await rejoin(held, other_room, str(first["rejoinToken"]))
    try:
        assert answer["ok"] and answer["self"] != first["self"]
    finally:
        await elsewhere.close()
    bad = await Participant().connect(held.url)
    try:
        refused = await bad.call("join", {"room": room, "rejoin": "not a token!"})
        assert refused["ok"] is False and refused["error"] == "bad-request"
    finally:
        await bad.close()


async def test_a_token_takes_the_seat_from_a_connection_not_yet_noticed_gone(held: Server) -> None:
    """A phone that switched networks comes back before the server saw its old connection drop (or,
    with several nodes, its node died): the token moves the seat, and the old connection is closed."""
    room = await create_room(held.url)
    anna, bob = await Participant().connect(held.url), await Participant().connect(held.url)
    first = await anna.join(room, "Anna")
    await bob.join(room, "Bob")
    again, answer = await rejoin(held, room, str(first["rejoinToken"]))
    try:
        assert answer["ok"] and answer["self"] == first["self"] and answer["rejoined"] is True
        assert await bob.wait_for("peer-back") == [{"id": first["self"], "name": "Anna"}]
        for _ in range(50):  # the old connection is closed by the server
            if not anna.sio.connected:
                break
            await asyncio.sleep(0.1)
        assert not anna.sio.connected
        await asyncio.sleep(0.3)
        assert bob.received("peer-away") == [] and bob.received("peer-left") == []  # its end changed nothing
        assert (await bob.call("offer", {"to": first["self"], "sdp": "v=0\r\n"}))["ok"]
        assert len(await again.wait_for("offer")) == 1
        assert stored.session_rows(held.data_dir) == [(room, "127.0.0.1", "Anna", 0), (room, "127.0.0.1", "Bob", 0)]
    finally:
        await again.close()
        await bob.close()
        await anna.close()
