"""The relay node on real sockets: coturn's own client, aioice, peer policy, TLS, reload and drain."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import socket
import ssl
import struct
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from kijkmee.devcert import ensure_dev_certificate
from kijkmee.relay import RelayNodeConfig, RunningRelay
from tests.conftest import IN_CI
from tests.turn_relay.udp_client import UdpTurnClient, error_code
from turn_relay.stun import MessageClass

SECRET = b"node-test-secret"
DTLS_HELLO = bytes([22, 0xFE, 0xFD]) + bytes(10) + b"hello"
TURNUTILS = shutil.which("turnutils_uclient")
needs_coturn = pytest.mark.skipif(
    TURNUTILS is None and not IN_CI, reason="coturn's turnutils are not installed (make test installs them)"
)


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secrets"
    path.write_text(SECRET.decode() + "\n")
    return path


async def start(secret_file: Path, tmp_path: Path, **options: object) -> RunningRelay:
    cert, key, _ = ensure_dev_certificate(tmp_path / "tls", __import__("datetime").datetime.now(
        __import__("datetime").UTC))
    settings: dict[str, object] = {
        "listen": ("127.0.0.1:0",), "tls_listen": ("127.0.0.1:0",), "cert": cert, "key": key,
        "auth_secret_file": secret_file, "allow_peer": ("127.0.0.1/32",), "ports": "41000-41999",
    }
    settings.update(options)
    return await RunningRelay.start(RelayNodeConfig(**settings).validate())  # type: ignore[arg-type]


@pytest.fixture(params=["c", "python"], ids=["fast-path", "python-path"])
def data_plane(request: pytest.FixtureRequest) -> dict[str, object]:
    """Every real-socket scenario below runs on both data planes: the C fast path and pure Python."""
    from turn_relay.node import FAST_PATH_AVAILABLE

    if request.param == "c" and not FAST_PATH_AVAILABLE:
        if IN_CI:
            pytest.fail("turn_relay._fastpath is not built")
        pytest.skip("turn_relay._fastpath is not built (needs a C compiler)")
    return {"python_data_plane": request.param == "python"}


@pytest.fixture
async def relay(secret_file: Path, tmp_path: Path, data_plane: dict[str, object]) -> AsyncIterator[RunningRelay]:
    running = await start(secret_file, tmp_path, **data_plane)
    assert (running.node.fast is None) is data_plane["python_data_plane"]
    yield running
    await running.stop()


@pytest.fixture
async def plain_relay(
    secret_file: Path, tmp_path: Path, data_plane: dict[str, object]
) -> AsyncIterator[RunningRelay]:
    running = await start(secret_file, tmp_path, allow_unencrypted=True, **data_plane)
    yield running
    await running.stop()


class Echo(asyncio.DatagramProtocol):
    """A UDP peer that echoes (like turnutils_peer) and keeps what it got."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.received.append(data)
        assert self.transport is not None
        self.transport.sendto(data, addr)


@pytest.fixture
async def echo() -> AsyncIterator[tuple[Echo, tuple[str, int]]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    yield protocol, transport.get_extra_info("sockname")[:2]
    transport.close()


async def test_channel_data_round_trip_over_udp(relay: RunningRelay, echo: tuple[Echo, tuple[str, int]]) -> None:
    peer, peer_address = echo
    client = await UdpTurnClient(relay.udp[0], SECRET).open()
    try:
        response = await client.allocate()
        assert response.message_class is MessageClass.SUCCESS and client.relay is not None
        assert client.relay[0] == "127.0.0.1" and 41000 <= client.relay[1] <= 41999
        assert (await client.channel_bind(0x4001, peer_address)).message_class is MessageClass.SUCCESS
        client.channel_data(0x4001, DTLS_HELLO)
        echoed = await client.receive()
        assert echoed == (0x4001).to_bytes(2, "big") + len(DTLS_HELLO).to_bytes(2, "big") + DTLS_HELLO
        assert peer.received == [DTLS_HELLO]
    finally:
        client.close()


async def test_ipv6_listener_and_relayed_address(secret_file: Path, tmp_path: Path) -> None:
    relay = await start(secret_file, tmp_path, listen=("[::1]:0",), tls_listen=(), relay_ip=("::1",),
                        allow_peer=("::1/128",))
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(Echo, local_addr=("::1", 0))
    client = await UdpTurnClient(relay.udp[0], SECRET).open()
    try:
        assert relay.udp[0][0] == "::1"
        assert (await client.allocate(ipv6=True)).message_class is MessageClass.SUCCESS
        assert client.relay is not None and client.relay[0] == "::1"
        peer_address = transport.get_extra_info("sockname")[:2]
        assert (await client.channel_bind(0x4005, peer_address)).message_class is MessageClass.SUCCESS
        client.channel_data(0x4005, DTLS_HELLO)
        assert (await client.receive())[4:] == DTLS_HELLO and peer.received == [DTLS_HELLO]
    finally:
        client.close()
        transport.close()
        await relay.stop()


async def test_plain_payloads_are_dropped_and_counted_when_encrypted_only(
    relay: RunningRelay, echo: tuple[Echo, tuple[str, int]]
) -> None:
    peer, peer_address = echo
    client = await UdpTurnClient(relay.udp[0], SECRET).open()
    try:
        await client.allocate()
        await client.channel_bind(0x4002, peer_address)
        marker = b"PLAINTEXT-MARKER-7c1e"
        for _ in range(5):
            client.channel_data(0x4002, marker)
        client.channel_data(0x4002, bytes([0x80, 0x60]) + bytes(10))  # RTP before any DTLS handshake
        await asyncio.sleep(0.3)
        assert peer.received == []
        drops = relay.server.metrics.drops
        assert drops["not-rfc7983"] == 5 and drops["rtp-before-dtls"] == 1  # type: ignore[index]
    finally:
        client.close()


@pytest.mark.parametrize("peer", [("10.0.0.1", 5000), ("192.168.1.1", 5000), ("169.254.169.254", 80),
                                  ("::ffff:10.0.0.1", 5000), ("::1", 5000)])
async def test_private_peers_are_refused_with_403(relay: RunningRelay, peer: tuple[str, int]) -> None:
    # Only the refusal is checked; nothing is ever sent towards these addresses.
    client = await UdpTurnClient(relay.udp[0], SECRET).open()
    try:
        await client.allocate()
        response = await client.create_permission(peer)
        if ":" in peer[0]:  # an IPv6 peer on an IPv4 allocation is a family mismatch first
            assert error_code(response) in (403, 443)
        else:
            assert error_code(response) == 403
        assert relay.server.metrics.packets_to_peer == 0
    finally:
        client.close()


async def test_aioice_turn_client_allocates_and_relays(relay: RunningRelay, echo: tuple[Echo, tuple[str, int]]) -> None:
    import aioice.turn

    from turn_relay.auth import mint_turn_credentials

    peer, peer_address = echo
    username, password = mint_turn_credentials(SECRET, "aioice", time.time(), 600)
    received: asyncio.Queue[bytes] = asyncio.Queue()

    class Receiver(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
            received.put_nowait(data)

    transport, _ = await aioice.turn.create_turn_endpoint(
        Receiver, server_addr=relay.udp[0], username=username, password=password, lifetime=600,
    )
    try:
        relayed = transport.get_extra_info("related_address"), transport.get_extra_info("sockname")
        assert relayed[1][0] == "127.0.0.1"
        transport.sendto(DTLS_HELLO, peer_address)  # aioice creates the permission, then sends
        assert await asyncio.wait_for(received.get(), 5) == DTLS_HELLO
        assert peer.received == [DTLS_HELLO]
    finally:
        transport.close()


async def run_uclient(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(TURNUTILS), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return output.decode(errors="replace")


@pytest.fixture
async def coturn_peer() -> AsyncIterator[int]:
    from tests.conftest import free_port

    port = free_port()
    process = await asyncio.create_subprocess_exec(
        "turnutils_peer", "-p", str(port), "-L", "127.0.0.1",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.3)
    yield port
    process.terminate()
    await process.wait()


LOSS = re.compile(r"Total lost packets (\d+) \(([\d.]+)%\)")


@needs_coturn
@pytest.mark.parametrize("mode", [[], ["-s"], ["-t"], ["-t", "-s"]], ids=["udp-channels", "udp-send", "tcp-channels",
                                                                         "tcp-send"])
async def test_coturn_uclient_relays_without_loss(plain_relay: RunningRelay, coturn_peer: int, mode: list[str]) -> None:
    host, port = plain_relay.udp[0]
    output = await run_uclient("-c", *mode, "-W", SECRET.decode(), "-u", "uclient", "-e", "127.0.0.1",
                               "-r", str(coturn_peer), "-n", "100", "-m", "5", "-l", "180", "-z", "5",
                               "-p", str(port), host)
    loss = LOSS.search(output)
    assert loss is not None, output[-2000:]
    assert loss.group(1) == "0", output[-2000:]
    assert plain_relay.server.metrics.packets_to_peer >= 500
    assert plain_relay.server.metrics.packets_to_client >= 500


@needs_coturn
async def test_coturn_uclient_plain_payloads_refused_when_encrypted_only(relay: RunningRelay, coturn_peer: int) -> None:
    host, port = relay.udp[0]
    output = await run_uclient("-c", "-s", "-W", SECRET.decode(), "-u", "uclient", "-e", "127.0.0.1",
                               "-r", str(coturn_peer), "-n", "20", "-m", "2", "-l", "180", "-z", "5",
                               "-p", str(port), host)
    # uclient's payloads are not media; a few happen to start with a byte of the STUN class (0-3),
    # which must pass (ICE consent checks are STUN), so most, not all, are dropped and counted.
    dropped = relay.server.metrics.drops["not-rfc7983"]  # type: ignore[index]
    assert dropped + relay.server.metrics.packets_to_peer == 40, output[-2000:]
    assert dropped >= 30


@needs_coturn
async def test_coturn_uclient_over_tls(plain_relay: RunningRelay, coturn_peer: int) -> None:
    host, port = plain_relay.tls_addresses[0]
    output = await run_uclient("-c", "-S", "-t", "-W", SECRET.decode(), "-u", "uclient", "-e", "127.0.0.1",
                               "-r", str(coturn_peer), "-n", "50", "-m", "2", "-l", "180", "-z", "5",
                               "-p", str(port), host)
    loss = LOSS.search(output)
    assert loss is not None and loss.group(1) == "0", output[-2000:]


def _tls_binding(host: str, port: int) -> bytes:
    """A STUN Binding request over TLS; the raw answer."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=10) as raw, context.wrap_socket(raw) as tls:
        tls.sendall(struct.pack("!HHI", 0x0001, 0, 0x2112A442) + bytes(range(12)))
        return tls.recv(2048)


def test_turn_over_tls_on_uvloop(secret_file: Path, tmp_path: Path) -> None:
    """`kijkmee serve` and `kijkmee relay` run on uvloop when it is installed (make run/test install it):
    a TLS client is answered there too. uvloop's TLS transport is no asyncio.Transport subclass; a class
    check on it once refused every TURN-over-TLS client (Chromium's "turns:" candidates failed)."""
    try:
        import uvloop
    except ImportError:
        if IN_CI:
            raise
        pytest.skip("uvloop is not installed (make test installs it)")

    async def binding() -> bytes:
        running = await start(secret_file, tmp_path)
        try:
            return await asyncio.to_thread(_tls_binding, *running.tls_addresses[0])
        finally:
            await running.stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        answer = runner.run(binding())
    # A Binding success response with our transaction id.
    assert answer[:2] == b"\x01\x01" and answer[8:20] == bytes(range(12))


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
async def test_turn_over_tls_refuses_old_protocols(relay: RunningRelay, version: ssl.TLSVersion) -> None:
    from tests.integration.test_tls import handshake

    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        await asyncio.to_thread(handshake, relay.tls_addresses[0][1], version)
    assert await asyncio.to_thread(handshake, relay.tls_addresses[0][1], ssl.TLSVersion.TLSv1_2) == "TLSv1.2"


async def test_reload_takes_new_secrets_and_keeps_allocations(
    relay: RunningRelay, secret_file: Path, echo: tuple[Echo, tuple[str, int]]
) -> None:
    _peer, peer_address = echo
    old = await UdpTurnClient(relay.udp[0], SECRET).open()
    try:
        await old.allocate()
        await old.channel_bind(0x4003, peer_address)
        secret_file.write_text("rotated-secret\n" + SECRET.decode() + "\n")
        relay.reload()
        new = await UdpTurnClient(relay.udp[0], b"rotated-secret", user="new").open()
        assert (await new.allocate()).message_class is MessageClass.SUCCESS
        new.close()
        secret_file.write_text("rotated-secret\n")
        relay.reload()
        stale = await UdpTurnClient(relay.udp[0], SECRET, user="stale").open()
        assert error_code(await stale.allocate()) == 401
        stale.close()
        old.channel_data(0x4003, DTLS_HELLO)  # the allocation made before both reloads still relays
        assert (await old.receive())[4:] == DTLS_HELLO
    finally:
        old.close()


async def test_sighup_reloads_and_sigterm_drains_then_stops(secret_file: Path, tmp_path: Path) -> None:
    from tests.conftest import free_port

    udp_port, metrics_port = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kijkmee", "relay", "--listen", f"127.0.0.1:{udp_port}",
        "--auth-secret-file", str(secret_file), "--metrics", f"127.0.0.1:{metrics_port}", "--drain-timeout", "3",
        "--allow-peer", "127.0.0.1/32", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 15)
        assert b"kijkmee relay is running" in line
        client = await UdpTurnClient(("127.0.0.1", udp_port), SECRET).open()
        assert (await client.allocate()).message_class is MessageClass.SUCCESS
        secret_file.write_text("after-sighup\n" + SECRET.decode() + "\n")
        process.send_signal(signal.SIGHUP)
        rotated = await UdpTurnClient(("127.0.0.1", udp_port), b"after-sighup", user="rotated").open()
        # The signal is handled asynchronously: on a loaded machine give it time, but stay below the
        # five refused logins that would block this source.
        for _ in range(4):
            await asyncio.sleep(0.5)
            rotated.nonce = None
            if (await rotated.allocate()).message_class is MessageClass.SUCCESS:
                break
        else:
            pytest.fail("the new secret was not accepted after SIGHUP")
        rotated.close()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{metrics_port}/healthz") as response:
                assert response.status == 200 and (await response.json())["allocations"] == 2
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            async with http.get(f"http://127.0.0.1:{metrics_port}/healthz") as response:
                assert response.status == 503 and (await response.json())["status"] == "draining"
            async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
                text = await response.text()
                assert "kijkmee_relay_draining 1" in text and "kijkmee_relay_allocations 2" in text
        late = await UdpTurnClient(("127.0.0.1", udp_port), SECRET, user="late").open()
        assert error_code(await late.allocate()) == 508
        late.close()
        client.close()
        assert await asyncio.wait_for(process.wait(), 10) == 0
        _, stderr = await process.communicate()
        logs = stderr.decode()
        assert "Draining" in logs
        for private in ("127.0.0.1", "tester", "late", "rotated", SECRET.decode(), "after-sighup"):
            assert private not in logs, private
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_metrics_hold_no_addresses(relay: RunningRelay) -> None:
    from turn_relay.exporter import render

    client = await UdpTurnClient(relay.udp[0], SECRET, user="someone").open()
    try:
        await client.allocate()
    finally:
        client.close()
    text = render(relay.node)
    assert "kijkmee_relay_allocations 1" in text
    assert "127.0.0.1" not in text and "someone" not in text


async def test_port_zero_finds_a_number_free_for_both_udp_and_tcp(
    secret_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from turn_relay.node import RelayNode

    taken = socket.socket()  # a TCP port that is in use
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    original = RelayNode.listen_udp
    calls: list[int] = []

    def first_pick_is_busy(self: RelayNode, host: str, port: int) -> tuple[str, int]:
        calls.append(port)
        return original(self, host, busy if len(calls) == 1 else port)

    monkeypatch.setattr(RelayNode, "listen_udp", first_pick_is_busy)
    try:
        relay = await start(secret_file, tmp_path, tls_listen=())
        try:
            assert len(calls) == 2 and relay.udp[0][1] == relay.tcp[0][1] != busy
            assert ("127.0.0.1", busy) not in relay.node.listeners  # the first UDP socket was closed
        finally:
            await relay.stop()
    finally:
        taken.close()
