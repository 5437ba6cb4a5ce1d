"""`kijkmee probe` against a real relay in this process: two aiortc peers forced through it.

Loopback only: both peers use relay candidates only, so the one address ever contacted is the relay's
on 127.0.0.1 (which is why the relay opens 127.0.0.1/32 as a peer range here).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kijkmee.cli import main
from kijkmee.devcert import ensure_dev_certificate
from kijkmee.probe import OK_VERDICT, ProbeResult, ProbeSettings, ProbeUsageError, TurnUrl, parse_urls, probe
from kijkmee.probe_call import CallOutcome, marker_frame, read_marker
from kijkmee.relay import RelayNodeConfig, RunningRelay
from tests.conftest import free_port
from turn_relay.auth import mint_turn_credentials
from turn_relay.metrics import DropReason

SECRET = b"probe-test-secret"
SAMPLES = 10
AUTH_REFUSED = "FAIL: authentication refused: check the secret (and that the relay's realm and clock agree)"


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secrets"
    path.write_text("# current first\n" + SECRET.decode() + "\nolder-secret\n")
    return path


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    cert, key, _ = ensure_dev_certificate(tmp_path / "tls", dt.datetime.now(dt.UTC))
    return cert, key


async def start_relay(secret_file: Path, cert: tuple[Path, Path], **options: object) -> RunningRelay:
    settings: dict[str, object] = {
        "listen": ("127.0.0.1:0",), "tls_listen": ("127.0.0.1:0",), "cert": cert[0], "key": cert[1],
        "auth_secret_file": secret_file, "allow_peer": ("127.0.0.1/32",), "ports": "43000-43999",
    }
    settings.update(options)
    return await RunningRelay.start(RelayNodeConfig(**settings).validate())  # type: ignore[arg-type]


@pytest.fixture
async def relay(secret_file: Path, cert: tuple[Path, Path]) -> AsyncIterator[RunningRelay]:
    running = await start_relay(secret_file, cert)
    yield running
    await running.stop()


def url(relay: RunningRelay, transport: str = "udp") -> TurnUrl:
    host, port = relay.tls_addresses[0] if transport == "tls" else relay.udp[0]
    return TurnUrl("turns" if transport == "tls" else "turn", host, port, "tcp" if transport == "tls" else transport)


def settings(**overrides: object) -> ProbeSettings:
    values: dict[str, object] = {"secret": SECRET, "timeout": 10.0, "samples": SAMPLES}
    values.update(overrides)
    return ProbeSettings(**values)  # type: ignore[arg-type]


async def no_allocations_left(relay: RunningRelay) -> bool:
    for _ in range(40):
        if not relay.server.allocations:
            return True
        await asyncio.sleep(0.05)
    return False


def assert_relayed_ok(result: ProbeResult) -> None:
    assert result.verdict == OK_VERDICT and result.ok
    assert result.route is not None and result.route.startswith("relay/relay on both peers, via TURN over ")
    assert result.rtt_samples == SAMPLES
    assert result.rtt_median_ms is not None and result.rtt_p95_ms is not None
    assert 0 < result.rtt_median_ms <= result.rtt_p95_ms < 2000
    assert result.setup_ms is not None and result.allocation_ms is not None
    assert result.relayed_address is not None and result.relayed_address.startswith("127.0.0.1:")


async def test_udp_probe_relays_srtp_media_both_ways(relay: RunningRelay) -> None:
    result = await probe(url(relay), settings())
    assert_relayed_ok(result)
    assert result.route is not None
    assert result.route.startswith("relay/relay on both peers, via TURN over udp (caller 127.0.0.1:")
    assert " <-> callee 127.0.0.1:" in result.route
    metrics = relay.server.metrics
    # 2 allocations of the relay check, then one for each peer connection.
    assert metrics.allocations_created == 4
    assert metrics.packets_to_peer > 3 * SAMPLES and metrics.packets_to_client > 3 * SAMPLES
    # aiortc sends SRTP only once its DTLS handshake is done, so the encrypted-only gate never had to drop any.
    assert metrics.drops[DropReason.RTP_BEFORE_DTLS] == 0
    assert metrics.drops[DropReason.NOT_RFC7983] == 0
    assert metrics.drops[DropReason.PEER_DENIED] == 0
    assert await no_allocations_left(relay)  # the probe releases what it allocated


async def test_tcp_probe(relay: RunningRelay) -> None:
    result = await probe(url(relay, "tcp"), settings())
    assert_relayed_ok(result)
    assert result.route is not None and " over tcp " in result.route
    assert result.tls is None


async def test_tls_probe_verifies_the_certificate(relay: RunningRelay, cert: tuple[Path, Path]) -> None:
    untrusted = await probe(url(relay, "tls"), settings())
    assert untrusted.verdict == (
        "FAIL: the relay's TLS certificate was not accepted: self-signed certificate "
        "(give its CA with --ca-file; the URL's host must be in the certificate)"
    )
    assert untrusted.tls is None and relay.server.metrics.allocations_created == 0
    # aiortc's own TURN connections get the same CA: without it they would not gather a relay candidate.
    trusted = await probe(url(relay, "tls"), settings(ca_file=cert[0]))
    assert_relayed_ok(trusted)
    assert trusted.tls == f"certificate verified against {cert[0]}"


async def test_wrong_secret_is_refused(relay: RunningRelay) -> None:
    result = await probe(url(relay), settings(secret=b"not-the-secret"))
    assert result.verdict == AUTH_REFUSED
    assert relay.server.metrics.auth_failures > 0 and relay.server.metrics.allocations_created == 0


async def test_relay_refusing_its_own_relayed_addresses_is_named(secret_file: Path, cert: tuple[Path, Path]) -> None:
    relay = await start_relay(secret_file, cert, allow_peer=())
    try:
        result = await probe(url(relay), settings())
    finally:
        await relay.stop()
    assert result.verdict == (
        "FAIL: the relay refuses its own relayed address 127.0.0.1 as a peer (403 Forbidden): "
        "its peer policy denies that range; allow it with --allow-peer 127.0.0.1/32"
    )
    assert result.setup_ms is None  # no peer connection was tried


async def test_silent_udp_address_fails_within_the_timeout() -> None:
    port = free_port()  # nothing listens there (UDP)
    started = time.monotonic()
    result = await probe(TurnUrl("turn", "127.0.0.1", port, "udp"), settings(timeout=1.5))
    assert time.monotonic() - started < 3
    assert result.verdict == f"FAIL: no relay candidates: the relay did not answer on udp 127.0.0.1:{port} within 1.5 s"


async def test_closed_tcp_port_is_named() -> None:
    port = free_port()
    result = await probe(TurnUrl("turn", "127.0.0.1", port, "tcp"), settings(timeout=5))
    assert result.verdict == f"FAIL: connection refused: nothing listens on tcp 127.0.0.1:{port}"


async def test_cli_probes_each_url_and_never_prints_credentials(
    relay: RunningRelay, secret_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host, port = relay.udp[0]
    urls = f"turn:{host}:{port}?transport=udp,turn:{host}:{port}?transport=tcp"
    now = time.time()
    code = await asyncio.to_thread(main, ["probe", urls, "--auth-secret-file", str(secret_file),
                                          "--samples", str(SAMPLES), "--json"])
    output = capsys.readouterr().out
    assert code == 0
    report = json.loads(output)
    assert report["ok"] is True
    assert [r["url"] for r in report["results"]] == [f"turn:{host}:{port}?transport={t}" for t in ("udp", "tcp")]
    # Frames loop back until the samples are in or the time is up (a loaded machine gets fewer).
    assert all(r["verdict"] == OK_VERDICT and 1 <= r["rtt_samples"] <= SAMPLES for r in report["results"])
    minted = [mint_turn_credentials(SECRET, "probe", now + delta, ttl=600) for delta in range(-1, 30)]
    assert SECRET.decode() not in output
    assert not any(password in output or username in output for username, password in minted)


async def test_cli_wrong_secret_exits_1_with_the_verdict(
    relay: RunningRelay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-secret\n")
    host, port = relay.udp[0]
    code = await asyncio.to_thread(main, ["probe", f"turn:{host}:{port}", "--auth-secret-file", str(wrong)])
    output = capsys.readouterr().out
    assert code == 1
    assert output.splitlines() == [
        f"relay        turn:{host}:{port}?transport=udp",
        AUTH_REFUSED,
    ]
    assert "not-the-secret" not in output


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["http://127.0.0.1:3478"],
         "'http://127.0.0.1:3478' is not a TURN URL such as turn:127.0.0.1:3478?transport=udp"),
        (["turns:127.0.0.1:5349?transport=udp"],
         "'turns:127.0.0.1:5349?transport=udp': turns: runs over TLS, so its transport is tcp"),
        (["turn:127.0.0.1:3478", "--timeout", "0"], "--timeout must be above 0 and at most 3600 seconds"),
        (["turn:127.0.0.1:3478", "--samples", "0"], "--samples must be between 1 and 1000"),
    ],
)
def test_cli_usage_errors_exit_2(argv: list[str], message: str, secret_file: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", *argv, "--auth-secret-file", str(secret_file)]) == 2
    assert capsys.readouterr().err == f"kijkmee probe: {message}\n"


def test_cli_unreadable_secret_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing"
    assert main(["probe", "turn:127.0.0.1:3478", "--auth-secret-file", str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"kijkmee probe: auth_secret_file: {missing} cannot be read (No such file or directory)\n"
    )


def test_urls_are_split_on_commas_and_get_a_default_transport() -> None:
    urls = parse_urls(["turn:relay.example:3478, turns:relay.example:5349", "turn:10.0.0.1:3478"])
    assert [str(u) for u in urls] == [
        "turn:relay.example:3478?transport=udp",
        "turns:relay.example:5349?transport=tcp",
        "turn:10.0.0.1:3478?transport=udp",
    ]
    with pytest.raises(ProbeUsageError):
        parse_urls(["turn:[::1]:3478"])  # aiortc takes no IPv6 TURN URL


@pytest.mark.parametrize("seq", [0, 1, 0x5AA5, 0xFFFF, 0x10000 + 7])
def test_marker_survives_a_frame(seq: int) -> None:
    assert read_marker(marker_frame(seq)) == seq % 0x10000


def test_rtt_summary_is_median_and_nearest_rank_p95() -> None:
    outcome = CallOutcome(rtts=[i / 1000 for i in range(100, 0, -1)])
    assert outcome.rtt_summary() == (0.0505, 0.095)
    assert CallOutcome(rtts=[0.2]).rtt_summary() == (0.2, 0.2)
    assert CallOutcome().rtt_summary() is None
