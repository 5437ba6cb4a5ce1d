"""The TURN part of `kijkmee probe`, before any WebRTC: two allocations that send to each other.

aioice drops the reason when a relayed candidate cannot be gathered, and ICE checks that the relay
refuses to pass just time out. So the probe first does by hand what the call will need, with aioice's
TURN client: allocate twice, and have each allocation send a STUN indication to the other's relayed
address. Errors here name the cause: a refused secret, silence, a certificate, the peer policy.

Imported only by `kijkmee probe` (aioice comes with aiortc, which the server does not need).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aioice import stun
from aioice.turn import TurnTransport, create_turn_endpoint

if TYPE_CHECKING:
    from kijkmee.probe import TurnUrl

PATH_TIMEOUT = 5.0
"""Seconds the two allocations may take to reach each other once both exist."""
RESEND_INTERVAL = 0.1
"""Seconds between indications while waiting for the other allocation's."""


class ProbeFailure(Exception):
    """Ends the probe of one URL; the message is the plain reason."""


@dataclass(frozen=True)
class RelayCheck:
    """What the two allocations showed."""

    relayed_address: str
    """The first allocation's relayed address, HOST:PORT."""
    allocation_seconds: float
    """Time the first Allocate took (including the 401 round that fetches realm and nonce)."""
    path_seconds: float
    """Time until each allocation had received from the other."""


class _Endpoint(asyncio.DatagramProtocol):
    """One allocation's receiving side: notes the first datagram, a send error, and the close."""

    def __init__(self) -> None:
        self.received = asyncio.Event()
        self.error: Exception | None = None
        self.errored = asyncio.Event()
        self.closed = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received.set()

    def error_received(self, exc: Exception) -> None:
        self.error = self.error or exc
        self.errored.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


def _ssl_argument(url: TurnUrl, tls: ssl.SSLContext | None) -> bool | ssl.SSLContext | None:
    """What aioice passes to `create_connection(ssl=...)`: True verifies against the system store."""
    return (tls or True) if url.scheme == "turns" else None


@contextlib.asynccontextmanager
async def _allocation(url: TurnUrl, username: str, password: str,
                      tls: ssl.SSLContext | None) -> AsyncIterator[tuple[TurnTransport, _Endpoint, tuple[str, int]]]:
    transport, endpoint = await create_turn_endpoint(_Endpoint, (url.host, url.port), username, password,
                                                     ssl=_ssl_argument(url, tls), transport=url.transport)
    try:
        yield transport, endpoint, transport.get_extra_info("sockname")
    finally:
        transport.close()  # Refresh with lifetime 0, then the socket closes
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await endpoint.closed.wait()


async def check_relay(url: TurnUrl, username: str, password: str, tls: ssl.SSLContext | None, timeout: float,
                      clock: Callable[[], float] = time.perf_counter) -> RelayCheck:
    """Allocate twice and send between the relayed addresses; ProbeFailure with a plain reason otherwise."""
    start = clock()
    async with contextlib.AsyncExitStack() as allocations:  # released outside the timeout
        try:
            async with asyncio.timeout(timeout):
                first = await allocations.enter_async_context(_allocation(url, username, password, tls))
                allocated = clock() - start
                second = await allocations.enter_async_context(_allocation(url, username, password, tls))
        except Exception as exc:  # classified below; anything unknown is reported, not raised
            raise ProbeFailure(explain_allocation_error(exc, url, timeout)) from None
        path_start = clock()
        await _exchange(first, second, min(PATH_TIMEOUT, max(0.0, timeout - (path_start - start))))
        return RelayCheck(f"{first[2][0]}:{first[2][1]}", allocated, clock() - path_start)


async def _exchange(first: tuple[TurnTransport, _Endpoint, tuple[str, int]],
                    second: tuple[TurnTransport, _Endpoint, tuple[str, int]], timeout: float) -> None:
    """Each allocation sends a STUN indication to the other's relayed address until both have one."""
    payload = bytes(stun.Message(stun.Method.BINDING, stun.Class.INDICATION))  # passes the encrypted-only gate
    ends = (first[1], second[1])
    try:
        async with asyncio.timeout(timeout):
            while not all(end.received.is_set() for end in ends):
                first[0].sendto(payload, second[2])
                second[0].sendto(payload, first[2])
                await _first_of([end.received for end in ends], [end.errored for end in ends], RESEND_INTERVAL)
                error = next((end.error for end in ends if end.error is not None), None)
                if error is not None:
                    raise ProbeFailure(explain_path_error(error, first[2][0]))
    except TimeoutError:
        raise ProbeFailure(
            f"the relay allocates, but its relayed addresses did not reach each other within {timeout:.1f} s "
            "(a firewall or NAT in front of the relay addresses? external_ip unreachable from the relay itself?)"
        ) from None


async def _first_of(all_of: list[asyncio.Event], any_of: list[asyncio.Event], timeout: float) -> None:
    """Return when every event of `all_of` or one of `any_of` is set, or after `timeout` seconds."""

    async def all_set() -> None:
        for event in all_of:
            await event.wait()

    waiters = [asyncio.ensure_future(all_set()), *(asyncio.ensure_future(e.wait()) for e in any_of)]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def explain_path_error(exc: Exception, relay_host: str) -> str:
    """A plain reason for a refused ChannelBind between the two allocations."""
    if isinstance(exc, stun.TransactionFailed):
        code, reason = exc.response.attributes.get("ERROR-CODE", (0, ""))
        if code == 403:
            return (f"the relay refuses its own relayed address {relay_host} as a peer (403 Forbidden): "
                    f"its peer policy denies that range; allow it with --allow-peer {relay_host}/32")
        return f"the relay refused a channel to the other allocation: {code} {reason}".rstrip()
    return f"sending between the two allocations failed: {type(exc).__name__}: {exc}"


def _stun_error(exc: stun.TransactionFailed) -> str:
    code, reason = exc.response.attributes.get("ERROR-CODE", (0, ""))
    if code == 401:
        return "authentication refused: check the secret (and that the relay's realm and clock agree)"
    if code == 486:
        return "the relay refused the allocation: 486 allocation quota reached for this user"
    if code == 508:
        return "the relay refused the allocation: 508 insufficient capacity (no relayed port free)"
    return f"the relay refused the allocation: {code} {reason}".rstrip()


def explain_allocation_error(exc: Exception, url: TurnUrl, timeout: float) -> str:
    """A plain reason for why allocating on `url` failed."""
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
