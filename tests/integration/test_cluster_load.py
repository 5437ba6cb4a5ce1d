"""A `--redis` node under load: many connections closing at once, an event loop that lags for seconds.

Real Redis (127.0.0.1:6379, a key prefix of its own) and PostgreSQL (127.0.0.1:5432, a fresh database);
without them these skip, except on CI (CI=true), where they fail.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from kijkmee.config import ServeConfig
from kijkmee.serve import running
from signaling.errors import RoomFull
from signaling.redis_membership import RedisMembership
from signaling.rooms import Participant as Person
from tests.integration.sio_helpers import create_room
from tests.integration.test_cluster import REDIS_URL, redis_with_own_prefix
from tests.store.conftest import fresh_postgres_database

PEOPLE = 300


async def _raw_join(http: aiohttp.ClientSession, url: str, room: str) -> aiohttp.ClientWebSocketResponse:
    """A participant as the browser's socket.io client speaks over a WebSocket, without its per-client
    machinery (hundreds of python-socketio clients in one test process are slow): open, join, ack."""
    ws = await http.ws_connect(url.replace("https://", "wss://") + "/socket.io/?EIO=4&transport=websocket",
                               ssl=False, headers={"Origin": url})
    assert (await ws.receive_str(timeout=30)).startswith("0")
    await ws.send_str("40")
    await ws.send_str("421" + json.dumps(["join", {"room": room}]))
    while True:
        frame = await ws.receive_str(timeout=30)
        if frame == "2":
            await ws.send_str("3")
        elif frame.startswith("431"):
            assert json.loads(frame[3:])[0]["ok"], frame
            return ws


async def test_hundreds_of_connections_closing_at_once_free_every_seat_without_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with redis_with_own_prefix() as shared, fresh_postgres_database() as dsn:
        config = ServeConfig(port=0, turn_port=0, turns_port=0, data_dir=tmp_path / "d", redis=REDIS_URL,
                             redis_prefix=shared.prefix, database_url=dsn, seat_grace_seconds=0).validate()
        caplog.set_level(logging.WARNING)
        async with running(config, say=False) as live, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:  # no cap on sockets
            rooms = [await create_room(live.url) for _ in range(PEOPLE // 3)]
            sockets: list[Any] = []
            for batch in range(0, PEOPLE, 50):
                sockets += await asyncio.gather(*(_raw_join(http, live.url, rooms[i // 3])
                                                  for i in range(batch, batch + 50)))
            assert int(await shared.client.scard(f"{shared.prefix}peers")) == PEOPLE
            await asyncio.gather(*(ws.close() for ws in sockets))  # all at once
            deadline = time.monotonic() + 30
            while int(await shared.client.scard(f"{shared.prefix}peers")) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert int(await shared.client.scard(f"{shared.prefix}peers")) == 0
            assert int(await shared.client.scard(f"{shared.prefix}rooms")) == 0
    errors = [(r.name, r.getMessage(), getattr(r, "error", None)) for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


TTL = 1.0
"""Heartbeat TTL of the nodes below: the thread beats every TTL / 4 seconds."""


async def _node(prefix: str, **options: Any) -> RedisMembership:
    node = RedisMembership(aioredis.Redis.from_url(REDIS_URL, decode_responses=True), prefix, node_ttl=TTL,
                           **options)
    await node.start()
    return node


async def _seat_three(node: RedisMembership, room: str) -> None:
    for i in range(3):
        await node.join(room, Person(f"{room[:4]}{i}", None), 3, owner=f"s{i}", token=f"{room[:4]}-token-{i:012d}",
                        relay_only=False)


async def test_a_node_whose_loop_lags_past_its_heartbeat_ttl_keeps_its_seats() -> None:
    async with redis_with_own_prefix() as shared:
        busy = await _node(shared.prefix, beat_url=REDIS_URL)
        other = await _node(shared.prefix)  # beats only when asked
        try:
            room = "busy-room" * 3
            await _seat_three(busy, room)
            time.sleep(3 * TTL)  # the point: the event loop does nothing for 3 TTLs
            await other.heartbeat()
            assert await other.sweep() == []
            with pytest.raises(RoomFull):  # a join runs the dead-node check on the room's seats too
                await other.join(room, Person("late", None), 3, owner="sx", token="late-token-0000000000",
                                 relay_only=False)
            assert len(await other.members(room)) == 3
            assert await busy.is_live()  # nothing to re-check: it was never taken for dead
        finally:
            await busy.close()
            await other.close()


async def test_a_node_whose_loop_is_stuck_is_let_die_and_notices_it() -> None:
    async with redis_with_own_prefix() as shared:
        stuck = await _node(shared.prefix, beat_url=REDIS_URL, loop_stall=TTL / 2)
        try:
            await _seat_three(stuck, "stuck-room" * 3)
            time.sleep(3 * TTL)  # longer than loop_stall + TTL: its heartbeat runs out
            await asyncio.sleep(TTL / 2)  # the loop turns again; the thread's next beat finds the key gone
            assert not await stuck.is_live()
            assert await stuck.is_live()  # said once; it beats again
        finally:
            await stuck.close()
