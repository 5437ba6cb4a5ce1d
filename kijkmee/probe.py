"""`kijkmee probe`: check a TURN relay end to end, as a call would use it.

For each TURN URL: one Allocate on its own (to name a precise reason when the relay refuses or stays
silent), then two aiortc peer connections in this process that may use relay candidates only
(iceTransportPolicy "relay"), a DTLS-SRTP video round trip between them, and a verdict. Credentials are
minted from the shared secret like signaling mints them; neither is ever printed.
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
    from aioice.stun import TransactionFailed

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
    setup_ms: float | None = None
    route: str | None = None
    rtt_median_ms: float | None = None
    rtt_p95_ms: float | None = None
    rtt_samples: int = 0
    frames_sent: int = 0
    frames_returned: int = 0

    def fail(self, reason: str) -> ProbeResult:
        self.ok, self.verdict = False, f"FAIL: {reason}"
        return self


class ProbeFailure(Exception):
    """Ends the probe of one URL; the message is the plain reason."""


class _Sink(asyncio.DatagramProtocol):
    """Receives nothing of interest; tells when the TURN allocation is gone."""

    def __init__(self) -> None:
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def allocate_once(url: TurnUrl, username: str, password: str, tls: ssl.SSLContext | None,
                        timeout: float) -> str:
    """Allocate and release once; the relayed address, or ProbeFailure with a plain reason."""
    from aioice.turn import create_turn_endpoint

    ssl_arg: bool | ssl.SSLContext | None = (tls or True) if url.scheme == "turns" else None
    try:
        async with asyncio.timeout(timeout):
            transport, sink = await create_turn_endpoint(_Sink, (url.host, url.port), username, password,
                                                         ssl=ssl_arg, transport=url.transport)
    except Exception as exc:  # classified below; anything unknown is reported, not raised
        raise ProbeFailure(explain_allocation_error(exc, url, timeout)) from None
    relayed = transport.get_extra_info("sockname")
    transport.close()
    try:
        async with asyncio.timeout(2):
            await sink.closed
    except TimeoutError:
        pass  # the allocation expires on its own
    return f"{relayed[0]}:{relayed[1]}"


def _stun_error(exc: TransactionFailed) -> str:
    code, reason = exc.response.attributes.get("ERROR-CODE", (0, ""))
    if code == 401:
        return "authentication refused: check the secret (and that the relay's realm and clock agree)"
    if code == 486:
        return "the relay refused the allocation: 486 allocation quota reached for this user"
    if code == 508:
        return "the relay refused the allocation: 508 insufficient capacity (no relayed port free)"
    return f"the relay refused the allocation: {code} {reason}".rstrip()


def explain_allocation_error(exc: Exception, url: TurnUrl, timeout: float) -> str:
    """A plain reason for why the Allocate of `url` failed."""
    from aioice import stun

    where = f"{url.host}:{url.port}"
    if isinstance(exc, stun.TransactionFailed):
        return _stun_error(exc)
    if isinstance(exc, stun.TransactionTimeout | TimeoutError):
        return f"no relay candidates: the relay did not answer on {url.transport} {where} within {timeout:g} s"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"the relay's TLS certificate was not accepted: {exc.verify_message} "
                "(give its CA with --ca-file; the URL's host must be in the certificate)")
    if isinstance(exc, ssl.SSLError):
        return f"the TLS handshake with the relay failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused: nothing listens on {url.transport} {where}"
    if isinstance(exc, OSError):
        return f"cannot reach the relay at {where}: {exc.strerror or exc}"
    if isinstance(exc, ConnectionError):
        return f"the relay's answer to Allocate was not usable: {exc}"
    return f"the allocation failed: {type(exc).__name__}: {exc}"


async def probe(url: TurnUrl, settings: ProbeSettings,
                clock: Callable[[], float] = time.perf_counter) -> ProbeResult:
    """Probe one relay URL; never raises for what the relay does, only for usage errors."""
    from aiortc import RTCIceServer

    from kijkmee.probe_call import relayed_call

    result = ProbeResult(url=str(url))
    tls = settings.tls_context() if url.scheme == "turns" else None
    username, password = mint_turn_credentials(settings.secret, PROBE_USER, time.time(), ttl=CREDENTIAL_TTL)
    start = clock()
    try:
        result.relayed_address = await allocate_once(url, username, password, tls, settings.timeout)
    except ProbeFailure as failure:
        return result.fail(str(failure))
    if url.scheme == "turns":
        result.tls = settings.tls_trust()  # the handshake verified the certificate with this trust
    result.allocation_ms = (clock() - start) * 1000
    remaining = settings.timeout - (clock() - start)
    server = RTCIceServer(urls=str(url), username=username, credential=password)
    outcome = await relayed_call(server, tls, settings.samples, remaining, clock)
    _fill(result, outcome, url)
    return result.fail(outcome.failure) if outcome.failure else _succeed(result)


def _fill(result: ProbeResult, outcome: CallOutcome, url: TurnUrl) -> None:
    if outcome.setup_seconds is not None:
        result.setup_ms = outcome.setup_seconds * 1000
    if outcome.routes:
        first = outcome.routes[0]
        result.route = (f"{first.local_type}/{first.remote_type} via TURN over {url.transport} "
                        f"({first.local_address} <-> {first.remote_address})")
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
        print("kijkmee probe: needs aiortc (pip install aiortc)", file=sys.stderr)
        return 1
    results = asyncio.run(probe_all(urls, settings))
    if args["json"]:
        print(json.dumps({"ok": all(r.ok for r in results), "results": [asdict(r) for r in results]}, indent=2))
    else:
        print("\n\n".join(format_text(result) for result in results))
    return 0 if all(result.ok for result in results) else 1
