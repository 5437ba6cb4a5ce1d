"""A fleet of real relay nodes behind one signaling server: joins are handed a healthy, least-loaded node.

Every relay here is a real `kijkmee relay` process (or coturn's turnserver) on loopback with the same
shared secret; signaling is a real `kijkmee serve` (in process) whose health poller talks to them over
HTTP and STUN. What a participant sees is the `iceServers` of its join ack, and whether a TURN
allocation with those credentials works on the node they name.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kijkmee.config import ServeConfig
from kijkmee.relay_nodes import NodeStatus, RelayNodeSpec
from kijkmee.serve import RunningServer, running
from signaling.http import RELAY_CHECK_CREDENTIAL_SECONDS
from tests.conftest import IN_CI, free_port
from tests.integration.sio_helpers import Participant, create_room
from tests.turn_relay.udp_client import UdpTurnClient
from turn_relay.auth import mint_turn_credentials

SECRET = "fleet-test-secret"
DTLS_HELLO = bytes([22, 0xFE, 0xFD]) + bytes(10) + b"hello"
RUNNING = re.compile(r"udp\+tcp 127\.0\.0\.1:(\d+).*metrics on 127\.0\.0\.1:(\d+)")


@dataclass
class RelayProcess:
    """One `kijkmee relay` subprocess: its TURN port (UDP and TCP) and its /healthz + /metrics port."""

    name: str
    process: asyncio.subprocess.Process
    port: int
    metrics_port: int

    @property
    def urls(self) -> tuple[str, ...]:
        return (f"turn:127.0.0.1:{self.port}?transport=udp", f"turn:127.0.0.1:{self.port}?transport=tcp")

    def spec(self, health: bool = True) -> RelayNodeSpec:
        health_url = f"http://127.0.0.1:{self.metrics_port}/healthz" if health else None
        return RelayNodeSpec(self.name, self.urls, health_url=health_url)

    async def health(self) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{self.metrics_port}/healthz") as r:
            return r.status, await r.json()

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "turn-secret"
    path.write_text(SECRET + "\n")
    return path


@pytest.fixture
async def relays(secret_file: Path) -> AsyncIterator[Callable[..., Awaitable[list[RelayProcess]]]]:
    """Start named relay processes: `await relays("a", "b")`. All are stopped afterwards."""
    started: list[RelayProcess] = []
    spawned: list[asyncio.subprocess.Process] = []

    async def start_one(name: str, index: int) -> RelayProcess:
        low = 42000 + 100 * index
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kijkmee", "relay", "--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
            "--auth-secret-file", str(secret_file), "--allow-peer", "127.0.0.1/32", "--ports", f"{low}-{low + 99}",
            "--drain-timeout", "120", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )
        spawned.append(process)
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()  # slow on a busy machine
        found = RUNNING.search(line)
        assert found, line
        relay = RelayProcess(name, process, int(found.group(1)), int(found.group(2)))
        started.append(relay)
        return relay

    async def start(*names: str) -> list[RelayProcess]:
        results = await asyncio.gather(*(start_one(name, len(started) + i) for i, name in enumerate(names)),
                                       return_exceptions=True)  # all spawned before any failure is raised
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if isinstance(r, RelayProcess)]

    yield start
    for process in spawned:  # every one, also those that never said they were running
        if process.returncode is None:
            process.kill()
        await process.wait()


@asynccontextmanager
async def signaling(tmp_path: Path, secret_file: Path, nodes: list[RelayNodeSpec]) -> AsyncIterator[RunningServer]:
    config = ServeConfig(
        port=0, data_dir=tmp_path / "serve", embedded_relay=False, turn_secret_file=secret_file,
        relay_nodes=tuple(nodes), relay_health_seconds=0.3, seat_grace_seconds=0,
    ).validate()
    async with running(config, say=False) as server:
        yield server


async def wait_for_states(server: RunningServer, want: dict[str, NodeStatus], timeout: float = 15) -> None:
    assert server.fleet is not None
    deadline = time.monotonic() + timeout
    while True:
        states = {name: view.status for name, view in server.fleet.states().items()}
        if all(states[name] is status for name, status in want.items()):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"relay states {states}, expected {want}")
        await asyncio.sleep(0.1)


async def join_rooms(base_url: str, people: int) -> list[dict[str, Any]]:
    """`people` participants join rooms of three, one after another; their join acks."""
    acks: list[dict[str, Any]] = []
    participants: list[Participant] = []
    try:
        room = ""
        for i in range(people):
            if i % 3 == 0:
                room = await create_room(base_url)
            participant = await Participant().connect(base_url)
            participants.append(participant)
            ack = await participant.join(room)
            assert ack["ok"], ack
            acks.append(ack)
    finally:
        for participant in participants:
            await participant.close()
    return acks


def node_of(ack: dict[str, Any], relays: list[RelayProcess]) -> str:
    """The relay node whose URLs this join was handed (exactly one node's, nothing else)."""
    (server,) = ack["iceServers"]
    matches = [relay.name for relay in relays if tuple(server["urls"]) == relay.urls]
    assert len(matches) == 1, server["urls"]
    return matches[0]


class Echo(asyncio.DatagramProtocol):
    """A UDP peer that echoes what reaches it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.transport.sendto(data, addr)


@asynccontextmanager
async def relay_through(ice_server: dict[str, Any]) -> AsyncIterator[tuple[str, int]]:
    """Allocate with the handed-out credentials on the handed-out UDP URL (aioice's TURN client), send a
    DTLS record to an echo peer through it and wait for the echo. Yields the relayed address while the
    allocation lasts."""
    import aioice.turn

    url = next(u for u in ice_server["urls"] if u.endswith("transport=udp"))
    host, port = url.split(":", 1)[1].split("?")[0].rsplit(":", 1)
    loop = asyncio.get_running_loop()
    echo_transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    received: asyncio.Queue[bytes] = asyncio.Queue()

    class Receiver(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
            received.put_nowait(data)

    transport, _ = await aioice.turn.create_turn_endpoint(
        Receiver, server_addr=(host, int(port)), username=ice_server["username"],
        password=ice_server["credential"], lifetime=600,
    )
    try:
        transport.sendto(DTLS_HELLO, echo_transport.get_extra_info("sockname")[:2])
        assert await asyncio.wait_for(received.get(), 5) == DTLS_HELLO
        yield transport.get_extra_info("sockname")
    finally:
        transport.close()
        echo_transport.close()


async def test_joins_skip_a_dead_and_a_draining_node_and_the_credentials_work_on_the_chosen_one(
    relays: Callable[..., Awaitable[list[RelayProcess]]], secret_file: Path, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead, draining, healthy = await relays("dead", "draining", "healthy")
    fleet = [dead, draining, healthy]
    # Someone is in a call through `draining`: after SIGTERM it keeps relaying for them (and stays up,
    # answering 503) instead of stopping at once.
    ongoing = await UdpTurnClient(("127.0.0.1", draining.port), SECRET.encode()).open()
    caplog.set_level(logging.INFO, logger="kijkmee.fleet")
    try:
        await ongoing.allocate()
        async with signaling(tmp_path, secret_file, [r.spec() for r in fleet]) as server:
            await wait_for_states(server, {"dead": NodeStatus.UP, "draining": NodeStatus.UP,
                                           "healthy": NodeStatus.UP})
            before = Counter(node_of(ack, fleet) for ack in await join_rooms(server.url, 3))
            assert before["dead"] >= 1  # every node was in use while all were healthy

            dead.process.kill()
            draining.process.send_signal(signal.SIGTERM)
            await wait_for_states(server, {"dead": NodeStatus.DOWN, "draining": NodeStatus.DRAINING})
            assert (await draining.health())[0] == 503

            acks = await join_rooms(server.url, 6)
            assert [node_of(ack, fleet) for ack in acks] == ["healthy"] * 6

            async with relay_through(acks[0]["iceServers"][0]) as relayed:
                assert relayed[0] == "127.0.0.1" and 42200 <= relayed[1] < 42300  # `healthy`'s relayed ports
                status, body = await healthy.health()
                assert status == 200 and body["allocations"] == 1

            # The pre-join network check gets the chosen node too, with credentials that last minutes
            # (a join's last the configured hours), and they work on that node.
            async with aiohttp.ClientSession() as http, \
                    http.get(f"{server.url}/r/{await create_room(server.url)}/check", ssl=False) as response:
                (checked,) = (await response.json())["iceServers"]
            assert tuple(checked["urls"]) == healthy.urls
            assert time.time() < int(checked["username"].split(":")[0]) <= time.time() + RELAY_CHECK_CREDENTIAL_SECONDS
            assert int(acks[0]["iceServers"][0]["username"].split(":")[0]) > time.time() + 3600
            async with relay_through(checked):
                pass
    finally:
        ongoing.close()
    logged = [(r.getMessage(), getattr(r, "node", None)) for r in caplog.records if r.name == "kijkmee.fleet"]
    assert ("relay node is down", "dead") in logged and ("relay node is draining", "draining") in logged


async def test_a_loaded_node_loses_to_an_idle_one_and_equal_nodes_share(
    relays: Callable[..., Awaitable[list[RelayProcess]]], secret_file: Path, tmp_path: Path,
) -> None:
    import aioice.turn

    loaded, idle = await relays("loaded", "idle")
    fleet = [loaded, idle]
    busy = []
    for i in range(4):  # four real allocations on `loaded`, as four people in calls through it
        username, password = mint_turn_credentials(SECRET.encode(), f"busy{i}", time.time(), 600)
        transport, _ = await aioice.turn.create_turn_endpoint(
            asyncio.DatagramProtocol, server_addr=("127.0.0.1", loaded.port), username=username,
            password=password, lifetime=600)
        busy.append(transport)
    try:
        assert (await loaded.health())[1]["allocations"] == 4
        async with signaling(tmp_path, secret_file, [r.spec() for r in fleet]) as server:
            assert server.fleet is not None
            assert server.fleet.states()["loaded"].allocations == 4
            acks = await join_rooms(server.url, 3)
            assert [node_of(ack, fleet) for ack in acks] == ["idle"] * 3

            for transport in busy:  # the calls end: aioice refreshes with lifetime 0
                transport.close()
            busy.clear()
            deadline = time.monotonic() + 15
            while server.fleet.states()["loaded"].allocations != 0:
                assert time.monotonic() < deadline, server.fleet.states()
                await asyncio.sleep(0.1)
            shares = Counter(node_of(ack, fleet) for ack in await join_rooms(server.url, 6))
            assert shares["loaded"] >= 2 and shares["idle"] >= 2, shares
    finally:
        for transport in busy:
            transport.close()


TURNSERVER = shutil.which("turnserver")


@pytest.mark.skipif(TURNSERVER is None and not IN_CI, reason="coturn is not installed (make test installs it)")
async def test_nodes_without_a_health_url_are_probed_with_stun_coturn_included(
    relays: Callable[..., Awaitable[list[RelayProcess]]], secret_file: Path, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="kijkmee.fleet")
    (ours,) = await relays("ours-no-health")
    port = free_port()
    coturn = await asyncio.create_subprocess_exec(
        "turnserver", "-n", "--listening-ip=127.0.0.1", f"--listening-port={port}", "--relay-ip=127.0.0.1",
        "--min-port=42900", "--max-port=42999", "--use-auth-secret", f"--static-auth-secret={SECRET}",
        "--realm=kijkmee", "--no-tls", "--no-dtls", "--no-cli", "--allow-loopback-peers", "--no-multicast-peers",
        "--log-file=/dev/null", "--simple-log", "--no-stdout-log",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    coturn_urls = (f"turn:127.0.0.1:{port}?transport=udp", f"turn:127.0.0.1:{port}?transport=tcp")
    nodes = [ours.spec(health=False), RelayNodeSpec("coturn", coturn_urls)]
    try:
        async with signaling(tmp_path, secret_file, nodes) as server:
            await wait_for_states(server, {"ours-no-health": NodeStatus.UP, "coturn": NodeStatus.UP})
            ours.process.kill()
            await wait_for_states(server, {"ours-no-health": NodeStatus.DOWN})
            acks = await join_rooms(server.url, 3)
            assert all(tuple(ack["iceServers"][0]["urls"]) == coturn_urls for ack in acks)
            async with relay_through(acks[0]["iceServers"][0]) as relayed:
                assert relayed[1] >= 42900  # coturn's relayed port range

            coturn.kill()
            await coturn.wait()
            await wait_for_states(server, {"coturn": NodeStatus.DOWN})
            # Nobody answers: every node that is not draining is handed out, for ICE to try them all.
            (ack,) = await join_rooms(server.url, 1)
            assert set(ack["iceServers"][0]["urls"]) == {*ours.urls, *coturn_urls}
            fallback = [r for r in caplog.records if r.getMessage().startswith("no relay node is healthy")]
            assert len(fallback) == 1 and getattr(fallback[0], "nodes", None) == ["ours-no-health", "coturn"]
    finally:
        if coturn.returncode is None:
            coturn.kill()
            await coturn.wait()
