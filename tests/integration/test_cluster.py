"""Several signaling nodes on one Redis and one PostgreSQL: `kijkmee serve --redis` as ops would run it.

Real parts only: two `kijkmee serve` processes on their own ports, the machine's Redis (127.0.0.1:6379,
under a random key prefix, deleted afterwards) and PostgreSQL (127.0.0.1:5432, a database created and
dropped here), python-socketio clients. Without Redis or PostgreSQL these skip, except on CI (CI=true),
where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import shutil
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from kijkmee.config import ConfigError, ServeConfig
from kijkmee.serve import running
from kijkmee.storage import cluster_turn, run_round
from metadata_store.crypto import KeyStore
from metadata_store.postgres import PostgresStore
from metadata_store.store import DEFAULT_CONTROLLER
from signaling.errors import RoomFull
from signaling.membership import LocalMembership, Membership
from signaling.redis_membership import BEAT, NODE_TTL, RedisMembership
from signaling.rooms import Participant as Person
from signaling.rooms import RoomRegistry
from tests.conftest import IN_CI, free_port
from tests.e2e.conftest import ServeProcess, start_serve, stop_serve
from tests.integration.sio_helpers import Participant, create_room
from tests.store.conftest import fresh_postgres_database

REDIS_URL = "redis://127.0.0.1:6379/0"
SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
GRACE = 30.0
"""Seat grace of the nodes (the default): well beyond a node's heartbeat TTL, so the SIGKILL test can tell
that the seats of people who never come back are freed because their node died."""


@dataclass
class SharedRedis:
    client: aioredis.Redis
    prefix: str


@pytest.fixture
async def shared_redis() -> AsyncIterator[SharedRedis]:
    async with redis_with_own_prefix() as shared:
        yield shared


@asynccontextmanager
async def redis_with_own_prefix() -> AsyncIterator[SharedRedis]:
    """The machine's Redis, and a random key prefix whose keys are deleted afterwards."""
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await asyncio.wait_for(client.ping(), 5)
    except (OSError, RedisError, TimeoutError) as error:
        await client.aclose()
        message = f"Redis not reachable at {REDIS_URL} ({type(error).__name__}: {error})"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    prefix = f"kijkmee-test-{uuid.uuid4().hex}:"
    try:
        yield SharedRedis(client, prefix)
    finally:
        keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@dataclass
class Cluster:
    a: ServeProcess
    b: ServeProcess
    dsn: str
    redis: SharedRedis

    async def sessions(self) -> list[tuple[str, bool]]:
        """(room, closed) of every session row, in order."""
        db = await asyncpg.connect(self.dsn)
        try:
            rows = await db.fetch("SELECT room_id, left_at IS NOT NULL AS closed FROM sessions ORDER BY id")
        finally:
            await db.close()
        return [(r["room_id"], r["closed"]) for r in rows]


@pytest.fixture
async def cluster(tmp_path: Path, shared_redis: SharedRedis) -> AsyncIterator[Cluster]:
    async with fresh_postgres_database() as dsn:
        extra = ["--redis", REDIS_URL, "--redis-prefix", shared_redis.prefix, "--database-url", dsn,
                 "--key-dir", str(tmp_path / "keys"), "--seat-grace-seconds", str(GRACE)]
        # One after the other: the first makes the default controller's key the second then uses.
        a = await asyncio.to_thread(start_serve, tmp_path / "a", *extra)
        try:
            b = await asyncio.to_thread(start_serve, tmp_path / "b", *extra)
            try:
                yield Cluster(a, b, dsn, shared_redis)
            finally:
                await _stop(b)
        finally:
            await _stop(a)


async def _stop(node: ServeProcess) -> None:
    if node.process.poll() is None:
        await asyncio.to_thread(stop_serve, node)


class Crowd:
    """Participants closed after the test."""

    def __init__(self) -> None:
        self.made: list[Participant] = []

    async def on(self, node: ServeProcess) -> Participant:
        person = await Participant().connect(node.url)
        self.made.append(person)
        return person

    async def close(self) -> None:
        for person in self.made:
            await person.close()


@pytest.fixture
async def crowd() -> AsyncIterator[Crowd]:
    people = Crowd()
    yield people
    await people.close()


async def rejoin(person: Participant, room: str, token: object) -> dict[str, Any]:
    answer: dict[str, Any] = await person.call("join", {"room": room, "rejoin": token})
    return answer


# --- (a) capacity across nodes ---------------------------------------------------------------------------


async def test_twenty_simultaneous_joins_through_two_nodes_admit_exactly_three(cluster: Cluster,
                                                                               crowd: Crowd) -> None:
    room = await create_room(cluster.a.url)
    people = [await crowd.on(cluster.a if i % 2 else cluster.b) for i in range(20)]
    answers = await asyncio.gather(*(person.join(room) for person in people))
    admitted = [a for a in answers if a["ok"]]
    assert len(admitted) == 3
    assert {a["error"] for a in answers if not a["ok"]} == {"room-full"}
    assert len({a["self"] for a in admitted}) == 3
    assert await cluster.sessions() == [(room, False)] * 3
    # Who got in sees the same room from either node: the last one admitted was told of the two others.
    assert sorted(len(a["peers"]) for a in admitted) == [0, 1, 2]


# --- (b) a call across nodes -----------------------------------------------------------------------------


async def test_participants_on_different_nodes_see_and_signal_each_other(cluster: Cluster, crowd: Crowd) -> None:
    room, other_room = await create_room(cluster.a.url), await create_room(cluster.b.url)
    anna, bob, mallory = await crowd.on(cluster.a), await crowd.on(cluster.b), await crowd.on(cluster.b)
    a = await anna.join(room, "Anna")
    b = await bob.join(room, "Bob")
    m = await mallory.join(other_room)
    assert b["peers"] == [{"id": a["self"], "name": "Anna"}]
    assert await anna.wait_for("peer-joined") == [{"id": b["self"], "name": "Bob"}]

    assert (await anna.call("offer", {"to": b["self"], "sdp": SDP}))["ok"]
    assert await bob.wait_for("offer") == [{"from": a["self"], "sdp": SDP}]
    assert (await bob.call("answer", {"to": a["self"], "sdp": SDP}))["ok"]
    assert await anna.wait_for("answer") == [{"from": b["self"], "sdp": SDP}]
    candidate = {"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host", "sdpMid": "0",
                 "sdpMLineIndex": 0, "usernameFragment": "abcd"}
    assert (await bob.call("candidate", {"to": a["self"], "candidate": candidate}))["ok"]
    assert await anna.wait_for("candidate") == [{"from": b["self"], "candidate": candidate}]

    # Only to a member of the sender's own room, whichever node either is on.
    refused = await mallory.call("offer", {"to": a["self"], "sdp": SDP})
    assert refused["error"] == "unknown-peer"
    assert (await anna.call("offer", {"to": m["self"], "sdp": SDP}))["error"] == "unknown-peer"
    assert (await mallory.call("offer", {"to": b["self"], "sdp": SDP}))["error"] == "unknown-peer"  # same node
    assert (await bob.call("offer", {"to": m["self"], "sdp": SDP}))["error"] == "unknown-peer"
    await asyncio.sleep(0.3)
    assert anna.received("offer") == [] and mallory.received("offer") == [] and len(bob.received("offer")) == 1

    assert (await bob.call("leave", {}))["ok"]
    assert await anna.wait_for("peer-left") == [{"id": b["self"]}]
    assert await cluster.sessions() == [(room, False), (room, True), (other_room, False)]


# --- (c) a node dies mid-call ----------------------------------------------------------------------------


async def test_when_a_node_is_killed_its_people_come_back_through_the_other_and_no_seat_stays_taken(
    cluster: Cluster, crowd: Crowd
) -> None:
    healing, abandoned = await create_room(cluster.a.url), await create_room(cluster.a.url)
    anna, bob, carla = await crowd.on(cluster.a), await crowd.on(cluster.a), await crowd.on(cluster.b)
    a, b = await anna.join(healing, "Anna"), await bob.join(healing, "Bob")
    c = await carla.join(healing, "Carla")
    dirk, frank, erik = await crowd.on(cluster.a), await crowd.on(cluster.a), await crowd.on(cluster.b)
    d, f = await dirk.join(abandoned, "Dirk"), await frank.join(abandoned, "Frank")
    assert (await erik.join(abandoned, "Erik"))["ok"]

    cluster.a.process.send_signal(signal.SIGKILL)
    await asyncio.to_thread(cluster.a.process.wait, 10)
    killed_at = asyncio.get_running_loop().time()

    # Anna and Bob's pages reconnect through node B with their tokens: same seats, same ids.
    anna2, bob2 = await crowd.on(cluster.b), await crowd.on(cluster.b)
    back_a = await rejoin(anna2, healing, a["rejoinToken"])
    back_b = await rejoin(bob2, healing, b["rejoinToken"])
    assert back_a["ok"] and back_a["rejoined"] is True and back_a["self"] == a["self"]
    assert back_b["ok"] and back_b["rejoined"] is True and back_b["self"] == b["self"]
    assert {p["id"] for p in back_b["peers"]} == {a["self"], c["self"]}
    assert await carla.wait_for("peer-back", 2) == [{"id": a["self"], "name": "Anna"},
                                                    {"id": b["self"], "name": "Bob"}]
    # The healed room signals again, now all through node B.
    assert (await anna2.call("offer", {"to": b["self"], "sdp": SDP}))["ok"]
    assert (await bob2.wait_for("offer"))[0]["from"] == a["self"]
    assert (await carla.call("offer", {"to": a["self"], "sdp": SDP}))["ok"]
    assert (await anna2.wait_for("offer"))[0]["from"] == c["self"]

    # Dirk and Frank never come back. Their seats stay taken only until node A's heartbeat runs out.
    gina = await crowd.on(cluster.b)
    assert (await gina.join(abandoned, "Gina"))["error"] == "room-full"
    left = await erik.wait_for("peer-left", 2, timeout=NODE_TTL + 4 * BEAT + 5)
    assert {p["id"] for p in left} == {d["self"], f["self"]}
    assert asyncio.get_running_loop().time() - killed_at < GRACE  # freed for the dead node, not a grace end
    assert (await gina.join(abandoned, "Gina"))["ok"]
    assert carla.received("peer-left") == []  # the healed room lost no one
    rows = await cluster.sessions()
    assert rows == [(healing, False)] * 3 + [(abandoned, True), (abandoned, True), (abandoned, False),
                                             (abandoned, False)]


# --- Seats in Redis, driven directly: several "nodes" in one process ------------------------------------


SHORT_TTL = 1.5
"""Heartbeat TTL of the in-process nodes of the dead-node test (nothing beats for them unless asked)."""


@asynccontextmanager
async def redis_nodes(node_ttl: float = NODE_TTL) -> AsyncIterator[list[RedisMembership]]:
    """Three nodes' seats on one Redis; each beats once at the start and then only when a test says so."""
    async with redis_with_own_prefix() as shared:
        made = [RedisMembership(aioredis.Redis.from_url(REDIS_URL, decode_responses=True), shared.prefix,
                                node_ttl=node_ttl) for _ in range(3)]
        for node in made:
            await node.start()
        try:
            yield made
        finally:
            for node in made:
                await node.close()


@pytest.fixture
async def nodes() -> AsyncIterator[list[RedisMembership]]:
    async with redis_nodes(SHORT_TTL) as made:
        yield made


@pytest.fixture(params=["local", "redis"])
async def memberships(request: pytest.FixtureRequest) -> AsyncIterator[list[Membership]]:
    """Both implementations, for the behaviour they share: three "nodes" (one and the same for local)."""
    if request.param == "local":
        local = LocalMembership(RoomRegistry())
        yield [local, local, local]
    else:
        async with redis_nodes() as made:
            yield list(made)


async def test_joins_racing_through_many_nodes_never_exceed_a_rooms_own_capacity(
    memberships: list[Membership]
) -> None:
    nodes = memberships

    async def attempt(i: int) -> bool:
        try:
            await nodes[i % 3].join("r" * 22, Person(f"p{i:03d}", None), 2, owner=f"sid{i}", token=f"t{i:020d}",
                                    relay_only=False)
        except RoomFull:
            return False
        return True

    results = await asyncio.gather(*(attempt(i) for i in range(60)))
    assert sum(results) == 2
    assert len(await nodes[0].members("r" * 22)) == 2 and await nodes[2].counts() == (1, 2)


async def test_a_dead_nodes_seats_are_freed_by_the_next_join_and_by_a_sweep(nodes: list[RedisMembership]) -> None:
    dead, alive, other = nodes
    await dead.heartbeat()
    for i in range(3):
        await dead.join("room-one" * 3, Person(f"d{i}", f"D{i}"), 3, owner=f"s{i}", token=f"tok-dead-{i:010d}",
                        relay_only=False)
        await dead.set_session(f"d{i}", 100 + i)
    await dead.join("room-two" * 3, Person("lone", None), 3, owner="s9", token="tok-lone-0000000000",
                    relay_only=True)
    await dead.heartbeat()
    with pytest.raises(RoomFull):  # while `dead` beats, its seats are taken
        await alive.join("room-one" * 3, Person("x", None), 3, owner="sx", token="tok-x-00000000000000",
                         relay_only=False)
    await asyncio.sleep(SHORT_TTL + 0.3)  # `dead` stops beating; its heartbeat key runs out
    await alive.heartbeat()
    await other.heartbeat()
    joined = await alive.join("room-one" * 3, Person("x", None), 3, owner="sx", token="tok-x-00000000000000",
                              relay_only=False)
    assert joined.others == ()
    assert sorted((f.seat.participant.id, f.seat.session_id) for f in joined.freed) == \
        [("d0", 100), ("d1", 101), ("d2", 102)]
    swept = await other.sweep()
    assert [(f.seat.participant.id, f.seat.relay_only, f.room_now_empty) for f in swept] == [("lone", True, True)]
    assert await other.sweep() == []
    assert await other.counts() == (1, 1)
    assert not await dead.is_live()  # it notices it was taken for dead


async def test_a_held_seat_is_taken_back_through_another_node_and_a_live_one_moves_with_its_token(
    memberships: list[Membership]
) -> None:
    first, second, _ = memberships
    room = "held-room" * 3
    await first.join(room, Person("anna", "Anna"), 3, owner="sa", token="anna-token-000000000", relay_only=False)
    await first.join(room, Person("bob", None), 3, owner="sb", token="bob-token-0000000000", relay_only=False)
    assert await first.hold("anna", "not-the-owner", 5) is None
    assert await first.hold("anna", "sa", 5) == (Person("bob", None),)
    assert await second.take_back("anna-token-000000000", "other-room" * 3, owner="x", new_token="n" * 20) is None
    taken = await second.take_back("anna-token-000000000", room, owner="sa2", new_token="anna-token-111111111")
    assert taken is not None and taken.previous_owner is None and taken.seat.participant == Person("anna", "Anna")
    assert await second.release_held("anna-token-000000000") is None  # spent
    assert await second.release_held("anna-token-111111111") is None  # not held: live again
    # Bob's page came back before anyone noticed his old connection was gone: the token moves the seat.
    moved = await second.take_back("bob-token-0000000000", room, owner="sb2", new_token="bob-token-1111111111")
    assert moved is not None and moved.previous_owner == "sb" and moved.others == (Person("anna", "Anna"),)
    assert await first.leave("bob", "sb") is None  # the old connection's goodbye frees nothing now
    await second.check_can_signal("anna", "bob")
    freed = await second.leave("bob", "sb2")
    assert freed is not None and freed.remaining == ("anna",) and not freed.room_now_empty


# --- (d) the scheduled jobs run once cluster-wide ------------------------------------------------------


async def test_only_one_node_runs_a_round_of_the_jobs_at_a_time(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    long_ago = now - dt.timedelta(days=100)
    room = "j" * 22
    async with fresh_postgres_database() as dsn:
        keys = KeyStore(tmp_path / "keys")
        one = await PostgresStore.open(dsn, keys, max_size=3)
        two = await PostgresStore.open(dsn, keys, max_size=3)
        try:
            await one.ensure_controller(DEFAULT_CONTROLLER, "Default", now)
            await one.create_room(room, long_ago, now + dt.timedelta(hours=1))
            old = await one.open_session(room, "192.0.2.7", "Anna", long_ago)
            await one.close_session(old, long_ago + dt.timedelta(minutes=5))
            async with cluster_turn(one) as mine:
                assert mine
                # Node two's rounds meanwhile are skipped and change nothing.
                assert await asyncio.gather(*(run_round(two, 90, now) for _ in range(5))) == [None] * 5
                async with cluster_turn(two) as theirs:
                    assert not theirs
                assert [s.id for s in await two.list_sessions()] == [old]
            done = await run_round(two, 90, now)  # one's round is over: now two may
            assert done is not None and done.retention.anonymised == 1
            assert await two.list_sessions() == []
            # A node that dies mid-round loses the lock with its database session; the other takes over.
            hung = cluster_turn(one)
            assert await hung.__aenter__()
            assert await run_round(two, 90, now) is None
            admin = await asyncpg.connect(dsn)
            try:
                killed = await admin.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
            finally:
                await admin.close()
            assert len(killed) == 1
            assert await run_round(two, 90, now) is not None
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await hung.__aexit__(None, None, None)
        finally:
            await one.close()
            await two.close()


def test_redis_needs_a_shared_database_and_tls_off_this_machine() -> None:
    dsn = "postgresql://postgres@127.0.0.1:5432/kijkmee"
    with pytest.raises(ConfigError, match="database_url"):
        ServeConfig(redis=REDIS_URL).validate()
    with pytest.raises(ConfigError, match="rediss://"):
        ServeConfig(redis="redis://redis.example.nl:6379/0", database_url=dsn).validate()
    with pytest.raises(ConfigError, match="must start with"):
        ServeConfig(redis="http://127.0.0.1:6379", database_url=dsn).validate()
    with pytest.raises(ConfigError, match="redis_prefix"):
        ServeConfig(redis_prefix="has space").validate()
    ServeConfig(redis="rediss://redis.example.nl:6380/0", database_url=dsn).validate()
    ServeConfig(redis=REDIS_URL, database_url=dsn).validate()


async def test_a_node_that_loses_redis_says_so_on_healthz(tmp_path: Path) -> None:
    """A load balancer polling /healthz stops sending people to a node that cannot reach the shared Redis."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed (Debian package redis-server)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    assert binary is not None
    port = free_port()
    own_redis = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", str(tmp_path)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        probe = aioredis.Redis.from_url(url)
        for _ in range(200):
            with contextlib.suppress(RedisError, OSError):
                if await probe.ping():
                    break
            await asyncio.sleep(0.05)
        await probe.aclose()
        async with fresh_postgres_database() as dsn:
            config = ServeConfig(port=0, turn_port=0, turns_port=0, data_dir=tmp_path / "d", redis=url,
                                 database_url=dsn).validate()
            async with running(config, say=False) as live, aiohttp.ClientSession() as http:
                async with http.get(f"{live.url}/healthz", ssl=False) as response:
                    assert response.status == 200
                    assert await response.json() == {"status": "ok", "connections": 0, "rooms": 0}
                own_redis.kill()
                own_redis.wait(10)
                async with http.get(f"{live.url}/healthz", ssl=False) as response:
                    assert response.status == 503
                    assert (await response.json())["status"] == "unavailable"
    finally:
        if own_redis.poll() is None:
            own_redis.kill()
            own_redis.wait(10)
