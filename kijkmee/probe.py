"""`kijkmee probe`: check a TURN relay end to end, as a call would use it.

For each TURN URL: two allocations that send to each other with aioice's TURN client (to name a
precise reason when the relay refuses, stays silent or will not relay between its own addresses), then
two aiortc peer connections in this process that may use relay candidates only (iceTransportPolicy
"relay"), a DTLS-SRTP video round trip between them, and a verdict. Credentials are minted from the
shared secret like signaling mints them; neither is ever printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kijkmee.config import ConfigError
from kijkmee.relay import read_secrets
from turn_relay.auth import mint_turn_credentials

if TYPE_CHECKING:
    from kijkmee.probe_call import CallOutcome

OK_VERDICT = "OK: media relayed through TURN, DTLS-SRTP connected"
PROBE_USER = "probe"
"""User part of the minted TURN username (it is sent in clear, so it names no one)."""
CREDENTIAL_TTL = 600
"""Seconds the minted credential is valid."""

_URL = re.compile(
    r"(?P<scheme>turns?):(?P<host>[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})(?:\?transport=(?P<transport>udp|tcp))?"
)

DESCRIPTION = """\
Check a TURN relay end to end: two WebRTC peers in this process (aiortc) may use relay
candidates only, so all their traffic goes through the relay; they connect with DTLS-SRTP and
loop video frames back. Prints the setup time, the media round-trip time, the route and a
verdict. Exit status: 0 when every URL is OK, 1 when one fails, 2 on a usage error.

URL is turn:HOST:PORT?transport=udp (the default), turn:HOST:PORT?transport=tcp or
turns:HOST:PORT?transport=tcp (TURN over TLS); repeat it or separate URLs with commas.
HOST is an IPv4 address or a name (aiortc does not take IPv6 TURN URLs).

turns: certificates are verified, with the host name (or IP address) checked: against the
system's trust store, or against --ca-file only. There is no option to skip verification.

The relay must let its relayed addresses reach each other (both peers' candidates are on
the relay): a relay on a private or loopback address needs --allow-peer for that range.
Each URL takes four short allocations (two to check the relay, one per peer), all released.
The media round trip includes VP8 encoding and decoding and aiortc's jitter buffer on both
peers, so it is higher than the network round trip alone (about 75 ms on loopback)."""


class ProbeUsageError(Exception):
    """A bad URL or option: exit status 2."""


@dataclass(frozen=True)
class TurnUrl:
    """One TURN server as the probe addresses it."""

    scheme: str
    """turn or turns."""
    host: str
    port: int
    transport: str
    """udp or tcp: how the client reaches the relay (relayed traffic is UDP either way)."""

    @classmethod
    def parse(cls, text: str) -> TurnUrl:
        match = _URL.fullmatch(text.strip())
        port = int(match.group("port")) if match else 0
        if match is None or not 0 < port < 65536:
            raise ProbeUsageError(f"{text!r} is not a TURN URL such as turn:127.0.0.1:3478?transport=udp")
        scheme, transport = match.group("scheme"), match.group("transport")
        if scheme == "turns" and transport == "udp":
            raise ProbeUsageError(f"{text!r}: turns: runs over TLS, so its transport is tcp")
        return cls(scheme, match.group("host"), port, transport or ("tcp" if scheme == "turns" else "udp"))

    def __str__(self) -> str:
        return f"{self.scheme}:{self.host}:{self.port}?transport={self.transport}"


def parse_urls(values: Sequence[str]) -> tuple[TurnUrl, ...]:
    """Every URL of repeated and comma-separated arguments, in order."""
    urls = tuple(TurnUrl.parse(part) for value in values for part in value.split(",") if part.strip())
    if not urls:
        raise ProbeUsageError("give at least one TURN URL")
    return urls


@dataclass(frozen=True)
class ProbeSettings:
    """How to probe; the secret is never shown (repr=False)."""

    secret: bytes = field(repr=False)
    """The current TURN REST shared secret (first line of the secret file)."""
    timeout: float = 20.0
    """Seconds one URL may take in all: allocation, connection and media samples."""
    samples: int = 20
    """Round trips to measure before the verdict."""
    ca_file: Path | None = None
    """CA certificates turns: is verified against instead of the system trust store."""

    def tls_context(self) -> ssl.SSLContext | None:
        """The context for turns: when --ca-file is given, None for the system trust store."""
        if self.ca_file is None:
            return None
        try:
            return ssl.create_default_context(cafile=str(self.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ProbeUsageError(f"--ca-file {self.ca_file}: cannot be loaded ({exc})") from None

    def tls_trust(self) -> str:
        return f"certificate verified against {self.ca_file}" if self.ca_file else \
            "certificate verified against the system trust store"


@dataclass
class ProbeResult:
    """The outcome for one URL, as printed and as JSON."""

    url: str
    ok: bool = False
    verdict: str = ""
    tls: str | None = None
    allocation_ms: float | None = None
    relayed_address: str | None = None
    relay_path_ms: float | None = None
    setup_ms: float | None = None
    route: str | None = None
    rtt_median_ms: float | None = None
    rtt_p95_ms: float | None = None
    rtt_samples: int = 0
    frames_sent: int = 0
    frames_returned: int = 0

    def as_json(self) -> dict[str, Any]:
        """The fields, times rounded to 0.1 ms."""
        return {name: round(value, 1) if isinstance(value, float) else value for name, value in asdict(self).items()}

    def fail(self, reason: str) -> ProbeResult:
        self.ok, self.verdict = False, f"FAIL: {reason}"
        return self


async def probe(url: TurnUrl, settings: ProbeSettings,
                clock: Callable[[], float] = time.perf_counter) -> ProbeResult:
    """Probe one relay URL; never raises for what the relay does, only for usage errors."""
    from aiortc import RTCIceServer

    from kijkmee.probe_call import relayed_call
    from kijkmee.probe_turn import ProbeFailure, check_relay

    result = ProbeResult(url=str(url))
    tls = settings.tls_context() if url.scheme == "turns" else None
    username, password = mint_turn_credentials(settings.secret, PROBE_USER, time.time(), ttl=CREDENTIAL_TTL)
    start = clock()
    try:
        check = await check_relay(url, username, password, tls, settings.timeout, clock)
    except ProbeFailure as failure:
        return result.fail(str(failure))
    if url.scheme == "turns":
        result.tls = settings.tls_trust()  # the handshake verified the certificate with this trust
    result.relayed_address = check.relayed_address
    result.allocation_ms, result.relay_path_ms = check.allocation_seconds * 1000, check.path_seconds * 1000
    remaining = settings.timeout - (clock() - start)
    if remaining <= 0:
        return result.fail(f"timeout: the relay checks alone took the whole {settings.timeout:g} s")
    server = RTCIceServer(urls=str(url), username=username, credential=password)
    outcome = await relayed_call(server, tls, settings.samples, remaining, clock)
    _fill(result, outcome, url)
    return result.fail(outcome.failure) if outcome.failure else _succeed(result)


def _fill(result: ProbeResult, outcome: CallOutcome, url: TurnUrl) -> None:
    if outcome.setup_seconds is not None:
        result.setup_ms = outcome.setup_seconds * 1000
    if outcome.routes:  # the caller's nominated pair first: its relayed address, then the callee's
        pairs = {f"{r.local_type}/{r.remote_type}" for r in outcome.routes}
        first = outcome.routes[0]
        result.route = (f"{' and '.join(sorted(pairs))} on both peers, via TURN over {url.transport} "
                        f"(caller {first.local_address} <-> callee {first.remote_address})")
    summary = outcome.rtt_summary()
    if summary is not None:
        result.rtt_median_ms, result.rtt_p95_ms = summary[0] * 1000, summary[1] * 1000
    result.rtt_samples = len(outcome.rtts)
    result.frames_sent, result.frames_returned = outcome.frames_sent, outcome.frames_returned


def _succeed(result: ProbeResult) -> ProbeResult:
    result.ok, result.verdict = True, OK_VERDICT
    return result


def format_text(result: ProbeResult) -> str:
    """The plain-text report of one URL; its last line is the verdict."""
    lines = [f"relay        {result.url}"]
    if result.tls:
        lines.append(f"tls          {result.tls}")
    if result.allocation_ms is not None:
        lines.append(f"allocation   {result.allocation_ms:.0f} ms (relayed address {result.relayed_address})")
    if result.relay_path_ms is not None:
        lines.append(f"relay path   {result.relay_path_ms:.0f} ms until two allocations had reached each other")
    if result.setup_ms is not None:
        lines.append(f"setup        {result.setup_ms:.0f} ms until both peer connections were connected (ICE, DTLS)")
    if result.route:
        lines.append(f"route        {result.route}")
    if result.rtt_median_ms is not None and result.rtt_p95_ms is not None:
        lines.append(f"media RTT    median {result.rtt_median_ms:.1f} ms, p95 {result.rtt_p95_ms:.1f} ms over "
                     f"{result.rtt_samples} VP8 frames looped back over SRTP "
                     f"({result.frames_returned} of {result.frames_sent} frames came back)")
    lines.append(result.verdict)
    return "\n".join(lines)


async def probe_all(urls: Sequence[TurnUrl], settings: ProbeSettings) -> list[ProbeResult]:
    """Probe the URLs one after the other (a failure does not stop the rest)."""
    return [await probe(url, settings) for url in urls]


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("urls", nargs="+", metavar="URL", help="TURN URL(s) of the relay to probe")
    parser.add_argument("--auth-secret-file", type=Path, metavar="FILE", required=True,
                        help="the relay's shared-secret file (one a line; the first, current one is used)")
    parser.add_argument("--timeout", type=float, default=20.0, metavar="SECONDS",
                        help="seconds each URL may take in all (default: 20)")
    parser.add_argument("--samples", type=int, default=20, metavar="N",
                        help="media round trips to measure (default: 20)")
    parser.add_argument("--ca-file", type=Path, metavar="FILE",
                        help="PEM CA certificate(s) to verify turns: against, instead of the system trust store")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")


def settings_from_args(args: dict[str, Any]) -> tuple[tuple[TurnUrl, ...], ProbeSettings]:
    """URLs and settings from parsed arguments; ProbeUsageError or ConfigError when they are wrong."""
    urls = parse_urls(args["urls"])
    if not 0 < args["timeout"] <= 3600:
        raise ProbeUsageError("--timeout must be above 0 and at most 3600 seconds")
    if not 1 <= args["samples"] <= 1000:
        raise ProbeUsageError("--samples must be between 1 and 1000")
    settings = ProbeSettings(secret=read_secrets(args["auth_secret_file"])[0], timeout=args["timeout"],
                             samples=args["samples"], ca_file=args["ca_file"])
    if any(url.scheme == "turns" for url in urls):
        settings.tls_context()  # a CA file that cannot be loaded is a usage error, before any probing
    return urls, settings


def run_probe_command(args: dict[str, Any]) -> int:
    """`kijkmee probe` after argument parsing: 0 all OK, 1 a failure, 2 a usage error."""
    try:
        urls, settings = settings_from_args(args)
    except (ProbeUsageError, ConfigError) as exc:
        print(f"kijkmee probe: {exc}", file=sys.stderr)
        return 2
    try:
        import aiortc  # noqa: F401
    except ImportError:
        print("kijkmee probe: needs aiortc: pip install 'kijkmee[probe]'", file=sys.stderr)
        return 1
    results = asyncio.run(probe_all(urls, settings))
    if args["json"]:
        print(json.dumps({"ok": all(r.ok for r in results), "results": [r.as_json() for r in results]}, indent=2))
    else:
        print("\n\n".join(format_text(result) for result in results))
    return 0 if all(result.ok for result in results) else 1
